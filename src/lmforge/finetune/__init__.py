"""Adapting a pretrained model to a task: classification heads (classify.py), later SFT and LoRA.

Nothing is imported here: ``lmforge finetune --help`` must not load torch.
"""
