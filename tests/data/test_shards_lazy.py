"""A split larger than the machine's memory trains: ``load_prepared`` memory-maps it and the
samplers read only the windows they draw (one file per split; no shards needed, see README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.data.prepare import prepare_dataset

CHILD = """
import sys
from lmforge.data.batching import WindowSampler
from lmforge.data.mixture import MixtureSampler
from lmforge.data.shards import load_prepared
data = load_prepared(sys.argv[1])
train, val = data.split("train"), data.split("val")
def resident():  # (private, file-backed) resident kB: a copy of the data is private, a mapped page is a file's
    fields = dict(line.split(":") for line in open("/proc/self/status"))
    return int(fields["RssAnon"].split()[0]), int(fields["RssFile"].split()[0])
before = resident()
plain = WindowSampler(train, batch_size=64, block_size=256, seed=0)
mixed = MixtureSampler([train, val], [0.5, 0.5], batch_size=64, block_size=256, seed=0)
batches = [(plain.next_batch(), mixed.next_batch()) for _ in range(50)]
after = resident()
print(len(train), (after[0] - before[0]) // 1024, (after[1] - before[1]) // 1024)
"""


@pytest.mark.slow  # writes and reads a split larger than the memory limit it sets
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RssAnon/RssFile from /proc")
def test_a_split_twice_the_size_of_memory_is_read_lazily(tmp_path):
    (tmp_path / "text.txt").write_text("a tiny corpus, to be blown up. " * 200, encoding="utf-8")
    out = tmp_path / "data"
    meta = prepare_dataset([str(tmp_path / "text.txt")], "char", out, progress=False)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    tokens = 2 * memory // 2  # uint16: 2 bytes a token, so the file is twice the machine's memory
    os.truncate(out / "train.bin", tokens * 2)  # sparse: the holes read as token 0 and take no disk
    meta["train_tokens"] = tokens
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True, check=True)
    length, private_mb, mapped_mb = map(int, done.stdout.split())
    assert length == tokens
    # 100 batches of 64 x 257 ids: the batches themselves are 100 x 64 x 256 x 2 x 8 bytes = 26 MB
    # of private memory; a copy of the split would be 2 x the machine's memory
    assert private_mb < 100, f"private memory grew {private_mb} MB"
    # 6,400 windows map at most 6,400 x 64 KB (the kernel's fault-around) = 400 MB of the file's pages
    assert mapped_mb < 1024, f"{mapped_mb} MB of a {2 * memory / 2**30:.0f} GiB split were mapped in"
