"""A small lmforge run directory written directly (no training), for the commands that read runs."""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.run import Run
from lmforge.tokenizers import train_tokenizer

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n"
) * 5
GPT2_SHAPE = {"pos_encoding": "learned", "mlp": "gelu", "norm": "layernorm", "bias": True}


def make_run(
    path: Path, kind: str = "char", vocab_size: int | None = None, seed: int = 0, **model: object
) -> Run:
    """A run at ``path`` with a ``kind`` tokenizer trained on TEXT and a GPT whose every weight is random.

    All parameters, LayerNorm scales and biases included, get noise: a converter that dropped or
    transposed one of them would change the logits, which an initialised-to-zero bias would hide.
    """
    tokenizer = train_tokenizer(kind, TEXT, vocab_size)
    settings = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16, **GPT2_SHAPE, **model}
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **settings)
    torch.manual_seed(seed)
    net = GPT(config)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    run = Run.create(path)
    run.save_tokenizer(tokenizer)
    run.write_config({"family": "gpt", "model": config.to_dict()})
    run.save_weights(net)
    return run


def make_bert_run(path: Path, vocab_size: int = 120, seed: int = 0, **model: object) -> Run:
    """A run at ``path`` with a WordPiece tokenizer ([CLS], [SEP], [MASK], [PAD]) trained on TEXT and a
    random-weight BERT with its masked-LM head, for the commands that read masked runs."""
    from lmforge.models.bert import BERT, BERTConfig

    tokenizer = train_tokenizer("wordpiece", TEXT, vocab_size, lowercase=True)
    settings = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16, "dropout": 0.0, **model}
    config = BERTConfig(vocab_size=tokenizer.vocab_size, **settings)
    torch.manual_seed(seed)
    net = BERT(config)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    run = Run.create(path)
    run.save_tokenizer(tokenizer)
    run.write_config({"family": "bert", "model": config.to_dict()})
    run.save_weights(net)
    return run
