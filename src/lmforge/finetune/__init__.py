"""Adapting a pretrained model to a task: classification fine-tuning, LoRA (``lora.py``).

Nothing heavy is imported here: peft and the training code load inside the functions that use them.
"""
