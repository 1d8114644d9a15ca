"""The weights and the servers of ``serve_load.py``: one GPT-2-shaped model both servers read, and
server subprocesses that are always stopped.

The weights are a Hugging Face GPT-2 directory (what ``transformers serve`` reads) and the lmforge
run ``lmforge convert --from-hf`` makes of it (what ``lmforge serve`` reads), built once per
shape under the work directory and reused while the recorded spec matches.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

RUNS = ("lmforge", "lmforge-sequential", "transformers", "transformers-cb")
END_OF_TEXT = "<|endoftext|>"
LMFORGE_MODEL_NAME = "gpt2-random"
CB_PAGE_SIZE = 256  # transformers' ContinuousBatchingConfig.page_size default
URL = re.compile(r"http://([\w.\-\[\]:]+?):(\d+)")


@dataclass(frozen=True)
class WeightSpec:
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    vocab_size: int = 50257
    n_positions: int = 1024
    seed: int = 0
    corpus_documents: int | None = None  # how many stdlib-docs documents train the tokenizer (None: all)

    @property
    def name(self) -> str:
        return f"gpt2-{self.n_layer}x{self.n_embd}-v{self.vocab_size}-s{self.seed}"

    def as_dict(self) -> dict:
        return asdict(self)


def train_tokenizer(spec: WeightSpec):
    """A byte-level BPE (GPT-2's pipeline) with exactly ``vocab_size`` ids, end-of-text the last.

    The corpus is too small for 50,256 merges, so the vocabulary is padded with plain added tokens
    (``<|extra_N|>``): every id a random model samples then decodes to text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lmforge.data.corpora import iter_texts

    texts = list(iter_texts(["builtin:stdlib-docs"]))[: spec.corpus_documents]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - 1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    missing = spec.vocab_size - 1 - tokenizer.get_vocab_size()
    tokenizer.add_tokens([f"<|extra_{i}|>" for i in range(missing)])
    tokenizer.add_special_tokens([END_OF_TEXT])
    assert (
        tokenizer.get_vocab_size() == spec.vocab_size
        and tokenizer.token_to_id(END_OF_TEXT) == spec.vocab_size - 1
    )
    return tokenizer


def build_weights(spec: WeightSpec, work: Path) -> dict:
    """``{"hf_dir", "run_dir", "tokenizer_json"}`` for ``spec``, built under ``work`` unless already there."""
    import torch
    import transformers

    hf_dir, run_dir, stamp = work / "hf", work / "run", work / "spec.json"
    paths = {"hf_dir": str(hf_dir), "run_dir": str(run_dir), "tokenizer_json": str(hf_dir / "tokenizer.json")}
    if stamp.is_file() and json.loads(stamp.read_text()) == spec.as_dict():
        return paths
    work.mkdir(parents=True, exist_ok=True)
    print(f"building {spec.name} in {work} (tokenizer, random weights, convert)", flush=True)
    eos = spec.vocab_size - 1
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(spec),
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        model_max_length=spec.n_positions,
    )
    fast.save_pretrained(hf_dir)
    config = transformers.GPT2Config(
        vocab_size=spec.vocab_size,
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(spec.seed)
    transformers.GPT2LMHeadModel(config).save_pretrained(hf_dir)
    lmforge = Path(sys.executable).parent / "lmforge"
    subprocess.run(
        [str(lmforge), "convert", "--from-hf", str(hf_dir), "--out", str(run_dir), "--overwrite"], check=True
    )
    stamp.write_text(json.dumps(spec.as_dict()))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HF_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def server_command(
    run: str, weights: dict, *, max_batch_size: int, max_sequence: int, dtype: str = "fp32"
) -> list[str]:
    """The command line of ``run`` (one of RUNS): loopback, CPU, the same weights, in ``dtype``.

    ``transformers serve --continuous-batching`` sizes its paged KV cache to 60% of the machine's
    RAM on a CPU (14 GB here, shared with other jobs); ``--cb-num-blocks`` gives it room for
    ``max_batch_size`` sequences of ``max_sequence`` tokens (blocks of 256 tokens) plus one spare
    block each, which the load never exceeds.
    """
    bin_dir = Path(sys.executable).parent
    if run.startswith("lmforge"):
        return [
            str(bin_dir / "lmforge"), "serve", "--checkpoint", weights["run_dir"], "--host", "127.0.0.1",
            "--port", "0", "--dtype", dtype, "--max-batch-size", str(max_batch_size),
            "--model-name", LMFORGE_MODEL_NAME,
        ]  # fmt: skip
    command = [
        str(bin_dir / "transformers"), "serve", weights["hf_dir"], "--host", "127.0.0.1",
        "--port", str(free_port()), "--device", "cpu", "--dtype", HF_DTYPES[dtype], "--log-level", "info",
    ]  # fmt: skip
    if run == "transformers-cb":
        blocks = max_batch_size * (-(-max_sequence // CB_PAGE_SIZE) + 1)
        command += ["--continuous-batching", "--cb-num-blocks", str(blocks)]
    return command


@dataclass
class Server:
    process: subprocess.Popen
    base_url: str
    model_id: str

    def peak_rss_mb(self) -> float | None:
        """The server process's high-water resident memory (Linux's VmHWM), read while it runs."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


def _healthy(base_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base_url}/health", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def started_server(
    run: str, command: list[str], *, log_path: Path, ready_timeout: float = 600.0
) -> Iterator[Server]:
    """The server of ``command`` once it answers ``/health``; its process group is stopped on exit,
    error or interrupt alike (SIGTERM, then SIGKILL after 15 s)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        port = command[command.index("--port") + 1]
        base_url = None if port == "0" else f"http://127.0.0.1:{port}"  # port 0: the server prints its own
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}: {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {ready_timeout:.0f} s: {_tail(log_path)}")
            if base_url is None:
                found = URL.search(log_path.read_text(errors="replace"))
                if found:
                    base_url = f"http://{found.group(1)}:{found.group(2)}"
            if base_url is not None and _healthy(base_url):
                break
            time.sleep(0.5)
        model_id = LMFORGE_MODEL_NAME if run.startswith("lmforge") else command[2]
        yield Server(process, base_url, model_id)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
