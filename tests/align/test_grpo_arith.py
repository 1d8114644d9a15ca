"""GRPO's showcase, the verifiable reward of ``builtin:arith``: a small GPT fine-tuned for a moment on
20 one-digit sums rendered as one-turn chats ("User: 4+9=\\n\\nAssistant: 13"), half right when
sampled, gets clearly more of them right after 40 GRPO iterations, near the reference (slow: ~30 s)."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.align.grpo import plan_grpo, run_grpo
from lmforge.align.rl_settings import GRPOConfig
from lmforge.data.instruct import arith_examples
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.run import Run
from lmforge.tokenizers import train_tokenizer
from lmforge.tokenizers.chat import ChatTemplate

SOURCE = "builtin:arith?digits=1,size=20"
KL_BOUND = 2.0  # nats per response (answers are 2-4 tokens)


def under_trained_sft_run(path, rows: list[dict], steps: int = 150):
    """Next-token training on "prompt rendered + ' ' + answer + end-of-text", stopped early."""
    template = ChatTemplate()
    texts = [template.render([{"role": "user", "content": r["prompt"]}]) + " " + r["answer"] for r in rows]
    tokenizer = train_tokenizer("char", "".join(texts) + "0123456789", None)
    eos = tokenizer.document_separator_id
    data = [tokenizer.encode(text) + [eos] for text in texts]
    width = max(map(len, data))
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=48, dropout=0.0
    )
    torch.manual_seed(0)
    net = GPT(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.full((32, width), eos)
        labels = torch.full((32, width), -100)
        for i, j in enumerate(torch.randint(len(data), (32,), generator=generator).tolist()):
            ids = torch.tensor(data[j])
            batch[i, : len(ids)] = ids
            labels[i, : len(ids) - 1] = ids[1:]
        loss = net(batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    run = Run.create(path)
    run.save_tokenizer(tokenizer)
    run.write_config({"family": "gpt", "model": config.to_dict()})
    run.save_weights(net.eval())
    return path


@pytest.mark.slow
def test_grpo_raises_arith_accuracy_near_the_reference(tmp_path):
    rows = arith_examples("train", size=20, digits=1)
    policy = under_trained_sft_run(tmp_path / "sft", rows)
    prompts = tmp_path / "train_prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows), encoding="utf-8")
    settings = GRPOConfig(
        iterations=40, batch_size=8, group_size=16, minibatch_size=32, epochs=1, max_new_tokens=4,
        lr=1e-3, eval_size=20, seed=0, device="cpu",
    )  # fmt: skip
    job = plan_grpo(
        policy=policy, reward="builtin:arith", prompts=SOURCE, out=tmp_path / "grpo", settings=settings,
        eval_prompts=str(prompts),  # the same 20 sums: what GRPO can teach this model is to get them right
    )  # fmt: skip
    summary = run_grpo(job, progress=False)
    assert 0.2 < summary["reward_before"] < 0.8, summary  # the sums are neither unknown nor mastered
    assert summary["reward_after"] > summary["reward_before"] + 0.1, summary
    assert summary["reward_last"] > summary["reward_first"] + 0.2, summary
    assert summary["kl_after"] < KL_BOUND, summary
