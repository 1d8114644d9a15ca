"""A fine-tuned classifier run, loaded to label new texts (``lmforge predict``).

classifier = load_classifier("runs/topics")
predictions = classifier.predict(["Return a Future ...", "Parse an email message ..."])
predictions[0].label, predictions[0].probs        # "asyncio", {"asyncio": 0.91, ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lmforge.errors import CheckpointError
from lmforge.finetune.batches import encode_examples, padding_id
from lmforge.finetune.classify import predict_rows
from lmforge.finetune.examples import Example


@dataclass
class Prediction:
    text: str
    label: str
    probs: dict[str, float]  # every class, most likely first


@dataclass
class Classifier:
    model: torch.nn.Module
    tokenizer: object
    layout: str  # how a text becomes the model's input (finetune/batches.py)
    labels: list[str]
    device: torch.device

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 32):
        """(one Prediction per text, how many texts were cut to fit the context)."""
        examples = [Example(t, self.labels[0], p) for t, p in zip(texts, pairs or [None] * len(texts))]
        rows, cut = encode_examples(examples, self.tokenizer, self.layout, self.model.config.block_size)
        probs = predict_rows(self.model, rows, padding_id(self.tokenizer), batch_size, self.device)
        predictions = []
        for text, row in zip(texts, probs.tolist()):
            ranked = sorted(zip(self.labels, row), key=lambda pair: -pair[1])
            predictions.append(Prediction(text, ranked[0][0], dict(ranked)))
        return predictions, cut


def load_classifier(
    checkpoint: str | Path, weights: Literal["auto", "best", "last"] = "auto", device: str = "auto"
) -> Classifier:
    """A run written by ``lmforge finetune classify``; one clear line for any other run."""
    from lmforge.hardware import resolve_device
    from lmforge.run import Run

    run = Run.open(checkpoint)
    config = run.read_config()
    task = config.get("task") or {}
    if task.get("kind") != "classify":
        raise CheckpointError(
            f"--checkpoint {checkpoint} is not a classifier (it holds a {config['family']} language model); "
            "make one with `lmforge finetune classify --checkpoint RUN ...`"
        )
    resolved = resolve_device(device)
    model = run.load_model(weights).to(resolved)
    return Classifier(model, run.load_tokenizer(), model.sequence_layout, list(task["labels"]), resolved)
