"""Known accelerators by name: peak dense FLOP/s per precision and memory, from the vendors'
datasheets, for planning a run (``lmforge estimate``) and for MFU (model FLOPs utilisation).

    GPUS["h100"].peak("bf16")   9.894e14   (989.4 TFLOP/s dense; the datasheet's 1,979 is with 2:4 sparsity)
    gpu("a100").memory_gb       80
    gpu_for_device_name("NVIDIA H100 80GB HBM3")   the H100 SXM entry (None for a GPU not listed)

Every figure is *dense* tensor-core throughput (the datasheets print the 2:4-sparse figure, twice
as large, next to it), and memory is the datasheet's decimal GB, a little under what the device
reports in GiB, so a plan errs on the side of not fitting.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.errors import UserInputError

TERA = 1e12


@dataclass(frozen=True)
class GPU:
    label: str  # as the datasheet names it
    memory_gb: float
    tflops: dict[str, float]  # precision -> dense peak TFLOP/s

    def peak(self, precision: str) -> float:
        """Peak dense FLOP/s at ``precision``, or one error naming the precisions it has."""
        if precision not in self.tflops:
            raise UserInputError(
                f"the {self.label} has no {precision} tensor cores; choose --precision from {', '.join(self.tflops)}"
            )
        return self.tflops[precision] * TERA


GPUS: dict[str, GPU] = {
    # NVIDIA H100 Tensor Core GPU datasheet, SXM column: BF16/FP16 1,979 TFLOPS and TF32 989 TFLOPS
    # "with sparsity" (dense: half), FP32 67 TFLOPS; 80 GB HBM3
    "h100": GPU("H100 SXM", 80, {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    # same datasheet, PCIe column: BF16/FP16 1,513 sparse, TF32 756 sparse, FP32 51; 80 GB
    "h100-pcie": GPU("H100 PCIe", 80, {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    # NVIDIA H200 datasheet: the H100 SXM's compute (BF16 1,979 sparse) with 141 GB HBM3e
    "h200": GPU("H200 SXM", 141, {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    # NVIDIA A100 Tensor Core GPU datasheet: BF16/FP16 312 TFLOPS dense (624 sparse), TF32 156,
    # FP32 19.5; 80 GB HBM2e (the 40 GB model below)
    "a100": GPU("A100 SXM 80GB", 80, {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    "a100-40gb": GPU("A100 40GB", 40, {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    # NVIDIA V100 datasheet (SXM2): 125 TFLOPS tensor (FP16), FP32 15.7; no bf16, no tf32; 32 GB
    "v100": GPU("V100 SXM2", 32, {"fp16": 125.0, "fp32": 15.7}),
    # NVIDIA L40S datasheet: BF16/FP16 733 sparse (366 dense), TF32 183 dense, FP32 91.6; 48 GB
    "l40s": GPU("L40S", 48, {"bf16": 366.0, "fp16": 366.0, "tf32": 183.0, "fp32": 91.6}),
    # NVIDIA L4 datasheet: BF16/FP16 242 sparse (121 dense), TF32 60 dense, FP32 30.3; 24 GB
    "l4": GPU("L4", 24, {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    # NVIDIA DGX B200 datasheet: 72 PFLOPS FP8 training for 8 GPUs (sparse), so BF16 2.25 PF dense
    # per GPU; 1,440 GB for 8: 180 GB each
    "b200": GPU("B200", 180, {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1100.0, "fp32": 75.0}),
    # AMD Instinct MI300X datasheet: BF16/FP16 1,307.4 TFLOPS dense, TF32 653.7, FP32 163.4; 192 GB
    "mi300x": GPU("MI300X", 192, {"bf16": 1307.4, "fp16": 1307.4, "tf32": 653.7, "fp32": 163.4}),
}


def gpu_names() -> list[str]:
    return list(GPUS)


def gpu(name: str) -> GPU:
    if name not in GPUS:
        raise UserInputError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}")
    return GPUS[name]


def gpu_for_device_name(device_name: str) -> GPU | None:
    """The table's entry for a name as CUDA reports it ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"),
    or None for a GPU not in the table (then measure a large matmul rather than guess a figure)."""
    words = device_name.lower().replace("-", " ").split()
    for key in sorted(GPUS, key=len, reverse=True):  # "h100-pcie" before "h100"
        model, _, variant = key.partition("-")
        if model in words and (not variant or variant in words):
            return GPUS[key]
    return None
