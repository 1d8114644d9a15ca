"""TRL's DPO and PPO steps on a Hugging Face GPT-2 directory (lmforge's ``convert --to-hf`` of a GPT
run): the baselines ``rlhf.py`` races lmforge's ``align dpo`` / ``align ppo`` against.

    dpo = trl_dpo(hf_dir, pairs, DPOSettings(steps=8, batch_size=8))   # in-process, TRL 1.16
    ppo = trl_ppo(hf_dir, prompts, PPOSettings(steps=4, batch_size=8))  # a subprocess, TRL 1.12

What one step is, on each side (so lmforge's compared step does the same work):

- DPO (``trl.DPOTrainer``, sigmoid loss): one optimizer step on ``batch_size`` preference pairs,
  chosen and rejected rows forwarded together, reference log-probs precomputed once before training
  (``precompute_ref_log_probs``, timed apart as ``setup_s``), fp32, no eval, no saving, no gradient
  checkpointing, constant learning rate, AdamW (beta2 as given, no weight decay), gradient clipping.
- PPO (``trl.experimental.ppo.PPOTrainer``; TRL 1.13 removed it, so it runs from the venv
  ``TRL_PPO_PYTHON`` with trl 1.12.0 + transformers 5.24 + torch 2.13 CPU): one *update* =
  sample ``response_length`` tokens for ``batch_size`` prompts (no stop token: every response is
  exactly that long), a reference, value and reward forward on them, GAE, then ``ppo_epochs``
  passes of ``batch_size / minibatch_size`` minibatch optimizer steps. TRL's value model is a
  second GPT-2 (``GPT2ForSequenceClassification``), trained beside the policy.

Step times come from ``TrainerCallback`` hooks (the wall time between consecutive step ends, the
first step's from the start of ``train()``), so model loading, tokenization and the reference
precompute are not in them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# `make trl-ppo-venv` builds it beside the project venv
TRL_PPO_PYTHON = Path(
    os.environ.get("TRL_PPO_PYTHON", Path(__file__).resolve().parents[1] / ".venv-trl-ppo/bin/python")
)
PPO_SCRIPT = Path(__file__).with_name("rlhf_trl_ppo.py")


@dataclass
class DPOSettings:
    steps: int = 8
    batch_size: int = 8  # preference pairs per step
    lr: float = 1e-4
    beta: float = 0.1
    beta2: float = 0.99  # AdamW's, lmforge's default
    grad_clip: float = 1.0
    max_length: int = 512  # TRL truncates longer pairs; lmforge's rows must fit the same
    seed: int = 0


@dataclass
class PPOSettings:
    steps: int = 4  # PPO updates (rollout batch + epochs of minibatch steps)
    batch_size: int = 8  # prompts per update
    minibatch_size: int = 8
    ppo_epochs: int = 2
    response_length: int = 16
    lr: float = 1e-4
    kl_coef: float = 0.05
    temperature: float = 1.0
    seed: int = 0


def step_timer():
    """A TrainerCallback recording each optimizer step's wall time and each logged record."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.logs: list[dict] = []
            self._last: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.times.append(now - self._last)
            self._last = now

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    return StepTimer()


def trl_dpo(hf_dir: str | Path, pairs: list[dict[str, str]], settings: DPOSettings) -> dict:
    """``settings.steps`` DPOTrainer steps on ``pairs`` ({"prompt", "chosen", "rejected"}, the prompt
    already rendered by the chat template; TRL appends end-of-text to each answer, as lmforge does).
    Returns the step times, the per-step losses and the setup time (loading + reference precompute)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            max_steps=settings.steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            adam_beta2=settings.beta2,
            max_grad_norm=settings.grad_clip,
            beta=settings.beta,
            loss_type=["sigmoid"],
            precompute_ref_log_probs=True,
            max_length=settings.max_length,
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=False,
            fp16=False,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=settings.seed,
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        setup_s = time.perf_counter() - start
        trainer.train()
    losses = [log["loss"] for log in timer.logs if "loss" in log]
    return {
        "trainer": "trl.DPOTrainer",
        "setup_s": round(setup_s, 3),
        "step_times": [round(t, 4) for t in timer.times],
        "losses": losses,
        "optimizer": args.optim,
        "settings": asdict(settings),
    }


def trl_ppo(hf_dir: str | Path, prompts: list[str], settings: PPOSettings, timeout: float = 1800) -> dict:
    """``settings.steps`` PPO updates by TRL 1.12's PPOTrainer, run by ``TRL_PPO_PYTHON`` (a venv
    outside the repository, since the installed TRL has no PPO): the JSON its script prints."""
    if not TRL_PPO_PYTHON.exists():
        raise FileNotFoundError(
            f"{TRL_PPO_PYTHON} is missing: build the venv (python3 -m venv; pip install torch==2.13.0 "
            "trl==1.12.0 transformers==5.24.0 accelerate datasets) or point TRL_PPO_PYTHON at one"
        )
    request = {"hf_dir": str(hf_dir), "prompts": prompts, "settings": asdict(settings)}
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(TRL_PPO_PYTHON), str(PPO_SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"TRL PPO failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # a smoke run: python benchmarks/rlhf_trl.py HF_DIR
    hf = sys.argv[1]
    rows = [{"prompt": "User: a\n\nAssistant:", "chosen": " yes", "rejected": " no"}] * 4
    print(json.dumps(trl_dpo(hf, rows, DPOSettings(steps=3, batch_size=4))))
    print(
        json.dumps(
            trl_ppo(hf, ["User: a\n\nAssistant:"] * 4, PPOSettings(steps=2, batch_size=4, minibatch_size=2))
        )
    )
