"""Hand-written CPU kernels for the few operations where PyTorch's own is far from what the
hardware does, compiled on first use with the system's C compiler (``build.py``) and used only
where a race on this machine says they pay (``gelu.py``: GPT-2's tanh GELU, 4-5x PyTorch's)."""
