"""Masked-LM evaluation and training against hand computations: the loss and accuracy count the
masked positions only, the trainer logs the accuracy beside the loss, and training lowers it."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.data.masking import MaskedWindowSampler, masked_eval_batches
from lmforge.models.bert import BERT, BERTConfig
from lmforge.train.config import TrainConfig
from lmforge.train.evaluation import loss_and_accuracy
from lmforge.train.trainer import Trainer
from tests.data.test_masking import VOCAB, ListTokenizer


def tiny_bert() -> BERT:
    torch.manual_seed(0)
    return BERT(BERTConfig(vocab_size=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0))


def repeating_stream(length: int = 3000) -> np.ndarray:
    """w5 w6 ... w24 over and over: every masked token is given away by its neighbours."""
    return (5 + np.arange(length) % 20).astype(np.uint16)


def test_loss_and_accuracy_count_only_the_masked_positions():
    model = tiny_bert().eval()
    batches = masked_eval_batches(
        repeating_stream(), ListTokenizer(), batch_size=4, block_size=16, num_batches=2
    )
    got = loss_and_accuracy(model, batches)
    logits = torch.cat([model(b["input_ids"]).logits for b in batches]).detach()
    labels = torch.cat([b["labels"] for b in batches])
    chosen = labels != -100
    assert 0 < chosen.sum() < chosen.numel() / 4
    expected_loss = F.cross_entropy(logits[chosen], labels[chosen]).item()
    expected_accuracy = (logits[chosen].argmax(-1) == labels[chosen]).float().mean().item()
    assert math.isclose(got["loss"], expected_loss, rel_tol=1e-6)
    assert math.isclose(got["accuracy"], expected_accuracy, rel_tol=1e-9)


def test_trainer_logs_the_figures_an_evaluation_returns_beside_its_loss():
    records = []
    config = TrainConfig(max_steps=2, eval_every=1, batch_size=2, device="cpu", precision="fp32", log_every=1)
    sampler = MaskedWindowSampler(repeating_stream(), ListTokenizer(), batch_size=2, block_size=16)
    evaluate = lambda model: {"loss": 1.5, "accuracy": 0.25}  # noqa: E731
    Trainer(tiny_bert(), config, sampler, evaluate=evaluate, log=records.append, progress=False).fit()
    evaluations = [r for r in records if "val_loss" in r]
    assert evaluations and all(r["val_accuracy"] == 0.25 and r["val_loss"] == 1.5 for r in evaluations)
    assert math.isclose(evaluations[0]["val_perplexity"], math.exp(1.5), rel_tol=1e-4)


def test_masked_lm_training_learns_a_predictable_stream():
    torch.manual_seed(0)
    model = BERT(BERTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=4, n_embd=64, dropout=0.0))
    tokenizer = ListTokenizer()
    val = masked_eval_batches(repeating_stream(600), tokenizer, batch_size=16, block_size=16, num_batches=4)
    before = loss_and_accuracy(model, val)
    config = TrainConfig(
        max_steps=400, batch_size=32, lr=3e-3, warmup_steps=20, device="cpu", precision="fp32"
    )
    sampler = MaskedWindowSampler(repeating_stream(), tokenizer, batch_size=32, block_size=16, seed=1)
    Trainer(model, config, sampler, progress=False).fit()
    after = loss_and_accuracy(model, val)
    assert before["loss"] > math.log(VOCAB) - 0.5 and before["accuracy"] < 0.1  # chance: 1 in 60
    # ln 20 = 3.0 would be the 20 words' frequencies alone; below it the neighbours are being read
    assert after["loss"] < 1.5 and after["accuracy"] > 0.6
