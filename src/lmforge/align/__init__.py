"""Post-training beyond supervised fine-tuning: a reward model, DPO, PPO and GRPO (issue 16)."""
