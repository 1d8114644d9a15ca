"""Training spread over processes under torchrun: ``--parallel ddp | fsdp | tp=K[,fsdp][,sp]``.

    launch.py      the flag, the process group and its 2-D (dp, tp) mesh, the DDP / FSDP2 transforms
    tensor.py      Megatron tensor parallelism of the blocks (torch.distributed.tensor.parallel)
    checkpoint.py  sharded checkpoints (torch.distributed.checkpoint) that load at any world size

Applied to a plain model from outside, as transforms, before the optimizer is built; the trainer
sees only ``train/distributed.py`` (data-parallel ranks, the global token count, rank 0).
"""
