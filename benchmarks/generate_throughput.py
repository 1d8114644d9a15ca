"""Decoding speed: lmforge with and without its KV cache against Hugging Face ``generate``.

Same GPT-2 (124M) weights in both (random, converted with lmforge.interop), a 32-token prompt,
256 new tokens, greedy, no end-of-text (every row decodes all 256), fp32 on the CPU; then beam
search with 4 beams; then lmforge with its weights cast to bf16. Variants are interleaved round
by round so machine noise hits them alike; the best round counts (noise only slows a run down).
``--device cuda`` runs the same rows on a GPU (results/generate_throughput-cuda.json).

At batch 1 a decoding step reads every weight once (about 500 MB in fp32) for little arithmetic,
so the ceiling is memory bandwidth / weight bytes. The script measures the read bandwidth in the
same run (summing a 1 GiB tensor) and prints that ceiling beside the figures.

    python benchmarks/generate_throughput.py                 # everything (about 5 minutes)
    python benchmarks/generate_throughput.py --rounds 1 --new-tokens 64 --skip-uncached
    python benchmarks/generate_throughput.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import bf16_runs_natively, table, write_result  # noqa: E402
from lmforge.generate import GenerationConfig, generate  # noqa: E402
from lmforge.generate.packing import pack_linear_layers, packing_pays_off  # noqa: E402
from lmforge.interop.gpt2 import from_hf_names, gpt_config  # noqa: E402
from lmforge.models.gpt import GPT, GPTConfig  # noqa: E402

PROMPT_TOKENS = 32


def read_bandwidth(gib: float = 1.0, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes per second for streaming a large fp32 tensor through the cores (a sum reads it once)."""
    data = torch.rand(int(gib * 2**30 / 4), device=device)
    data.sum()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum().item()  # .item(): the sum has finished on a GPU too
        best = max(best, data.numel() * 4 / (time.perf_counter() - start))
    return best


def build_models() -> tuple[GPT, object]:
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(bos_token_id=50256, eos_token_id=50256)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    ours = GPT(GPTConfig(**gpt_config(hf_config.to_dict(), "benchmark"))).eval()
    ours.load_state_dict(from_hf_names(hf.state_dict(), tied=True), strict=False)
    return ours, hf


def greedy_without_cache(model: GPT, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """The naive loop: run the whole sequence again for every new token."""
    ids = prompt
    for _ in range(new_tokens):
        next_id = model(ids, last_logits_only=True).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids[:, prompt.shape[1] :]


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--skip-uncached", action="store_true", help="leave out the slow no-cache loop")
    parser.add_argument("--skip-beam", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    new, device = args.new_tokens, args.device
    on_gpu = device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        print("skipped: --device cuda needs a CUDA GPU and torch sees none")
        return

    ours, hf = build_models()
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    ours_bf16 = GPT(ours.config).eval()
    ours_bf16.load_state_dict(ours.state_dict())
    ours_bf16.to(torch.bfloat16)
    unpacked = GPT(ours.config).eval()  # the no-cache loop, as plain as it gets
    unpacked.load_state_dict(ours.state_dict())
    for model in (ours, hf, ours_bf16, unpacked):
        model.to(device)
    with_bf16 = on_gpu or bf16_runs_natively()
    if not with_bf16:
        print("bf16 rows skipped: this CPU has no bf16 hardware (emulated, slower than fp32)")
    packed = {}
    for name, model in (("fp32", ours), ("bf16", ours_bf16)):  # oneDNN packing: a CPU path only
        packed[name] = not on_gpu and packing_pays_off(model, 1) and pack_linear_layers(model) > 0
    bandwidth = read_bandwidth(device=device)
    ceiling = bandwidth / weight_bytes
    print(
        f"weights {weight_bytes / 1e6:.0f} MB fp32; read bandwidth {bandwidth / 1e9:.1f} GB/s; "
        f"batch-1 ceiling {ceiling:.1f} tokens/s (fp32), {2 * ceiling:.1f} (bf16)"
    )

    generator = torch.Generator().manual_seed(1)
    greedy = GenerationConfig(strategy="greedy", max_new_tokens=new, eos_id=None)
    beam = GenerationConfig(
        strategy="beam", num_beams=4, max_new_tokens=new, eos_id=None, early_stopping=True
    )
    variants: dict[str, Callable[[], object]] = {}
    agreement: dict[str, bool] = {}
    for batch in args.batches:
        prompt = torch.randint(0, 50257, (batch, PROMPT_TOKENS), generator=generator)
        prompts = prompt.tolist()
        prompt = prompt.to(device)
        mask = torch.ones_like(prompt)

        def lmforge_cached(model=ours, prompts=prompts) -> list:
            return generate(model, prompts, greedy)

        def hf_generate(prompt=prompt, mask=mask, beams=1) -> torch.Tensor:
            return hf.generate(
                prompt,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                num_beams=beams,
                early_stopping=True,
                eos_token_id=None,
                pad_token_id=0,
                use_cache=True,
            )

        with torch.inference_mode():
            ours_ids = [r[0].ids for r in lmforge_cached()]
            hf_ids = hf_generate()[:, PROMPT_TOKENS:].tolist()
        agreement[f"batch {batch} greedy ids equal HF"] = ours_ids == hf_ids
        variants[f"lmforge cached, batch {batch}"] = lmforge_cached
        variants[f"HF generate, batch {batch}"] = hf_generate
        if with_bf16:
            variants[f"lmforge cached bf16, batch {batch}"] = lambda p=prompts: generate(ours_bf16, p, greedy)
        if not args.skip_uncached and batch == 1:
            variants[f"lmforge no cache, batch {batch}"] = lambda p=prompt: greedy_without_cache(
                unpacked, p, new
            )
        if not args.skip_beam and batch == 1:
            variants["lmforge beam 4, batch 1"] = lambda p=prompts: generate(ours, p, beam)
            variants["HF beam 4, batch 1"] = lambda p=prompt, m=mask: hf_generate(p, m, beams=4)

    best: dict[str, float] = {}
    with torch.inference_mode():
        for name, fn in variants.items():  # warm-up: first-call allocations and kernel choice
            if "no cache" not in name:
                fn()
        for round_index in range(args.rounds):
            for name, fn in variants.items():
                seconds = timed(fn, device)
                best[name] = min(best.get(name, float("inf")), seconds)
                print(f"round {round_index + 1}: {name}: {seconds:.2f} s", file=sys.stderr)

    rows, results = [], {}
    for name in variants:
        kind = name.rsplit(", batch", 1)[0]
        batch_size = int(name.rsplit("batch ", 1)[1])
        hf_name = f"HF {'beam 4' if 'beam' in kind else 'generate'}, batch {batch_size}"
        rate = batch_size * new / best[name]
        hf_rate = batch_size * new / best[hf_name]
        row = {"tokens_per_s": rate, "seconds": best[name], "vs_hf": rate / hf_rate}
        if batch_size == 1 and "beam" not in kind:
            limit = 2 * ceiling if "bf16" in kind else ceiling
            row["of_ceiling"] = rate / limit
        results[name] = row
        rows.append(
            [
                name,
                f"{rate:,.1f}",
                f"{row['vs_hf']:.2f}x",
                f"{100 * row['of_ceiling']:.0f}%" if "of_ceiling" in row else "",
            ]
        )
    print(table(rows, ["variant", "new tokens/s", "vs HF (same batch)", "of bandwidth ceiling"]))
    for what, equal in agreement.items():
        print(f"{what}: {'yes' if equal else 'NO'}")
    path = write_result(
        "generate_throughput" + ("-cuda" if on_gpu else ""),
        {
            "device": torch.cuda.get_device_name() if on_gpu else "cpu",
            "new_tokens": new,
            "prompt_tokens": PROMPT_TOKENS,
            "weight_bytes_fp32": weight_bytes,
            "read_bandwidth_bytes_per_s": bandwidth,
            "batch1_ceiling_tokens_per_s": ceiling,
            "agreement": agreement,
            "packed": packed,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
