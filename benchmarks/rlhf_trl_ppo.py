"""TRL's PPOTrainer on a Hugging Face GPT-2 directory, for ``rlhf_trl.trl_ppo``: run by the separate
venv's python (TRL 1.12, the last TRL with PPO), request JSON on stdin, result JSON on stdout.

    {"hf_dir": ..., "prompts": ["User: ...\\n\\nAssistant:", ...], "settings": {PPOSettings fields}}

The policy is the GPT-2 at ``hf_dir``; the reference is TRL's own frozen copy; the value model and
the reward model are ``GPT2ForSequenceClassification`` on the same weights with a fresh scalar
head (seeded), the shape of lmforge's reward model. ``stop_token_id`` is left unset, so TRL samples
exactly ``response_length`` tokens per prompt. This file imports nothing from lmforge.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time


def main() -> None:
    request = json.loads(sys.stdin.read())
    settings = request["settings"]

    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times, self.logs, self._last = [], [], None

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.times.append(now - self._last)
            self._last = now

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    start = time.perf_counter()
    torch.manual_seed(settings["seed"])
    hf_dir = request["hf_dir"]
    tokenizer = AutoTokenizer.from_pretrained(hf_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(hf_dir, num_labels=1, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(hf_dir, num_labels=1, dtype=torch.float32)
    for model in (value, reward):
        model.config.pad_token_id = tokenizer.pad_token_id
    prompts = request["prompts"]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts]})
    batch, minibatch = settings["batch_size"], settings["minibatch_size"]
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = PPOConfig(
            output_dir=out,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            num_mini_batches=batch // minibatch,
            num_ppo_epochs=settings["ppo_epochs"],
            total_episodes=settings["steps"] * batch,
            response_length=settings["response_length"],
            temperature=settings["temperature"],
            learning_rate=settings["lr"],
            lr_scheduler_type="constant",
            kl_coef=settings["kl_coef"],
            local_rollout_forward_batch_size=batch,
            num_sample_generations=0,
            stop_token_id=None,
            missing_eos_penalty=None,
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=False,
            fp16=False,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=settings["seed"],
        )
        trainer = PPOTrainer(
            args=args,
            processing_class=tokenizer,
            model=policy,
            ref_model=reference,
            reward_model=reward,
            train_dataset=dataset,
            value_model=value,
            eval_dataset=dataset,
            callbacks=[timer],
        )
        setup_s = time.perf_counter() - start
        trainer.train()
    logs = [log for log in timer.logs if "loss/policy_avg" in log]
    result = {
        "trainer": "trl.experimental.ppo.PPOTrainer",
        "versions": {
            "trl": __import__("trl").__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
        },  # fmt: skip
        "setup_s": round(setup_s, 3),
        "step_times": [round(t, 4) for t in timer.times],
        "policy_loss": [log["loss/policy_avg"] for log in logs],
        "value_loss": [log["loss/value_avg"] for log in logs],
        "kl": [log["objective/kl"] for log in logs],
        "scores": [log["objective/scores"] for log in logs],
        "response_tokens": settings["response_length"],
        "optimizer": args.optim,
        "settings": settings,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
