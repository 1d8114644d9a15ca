"""Compile a kernel's C source once per machine, with the system's C compiler, and load it.

    library = load("gelu_tanh")    # a ctypes.CDLL, or None: no compiler, or the build failed

The source ships with the package (``kernels/<name>.c`` and the headers it includes); the shared
library goes to ``$LMFORGE_CACHE/kernels/<name>-<hash>.so`` (default ``~/.cache/lmforge``), the
hash taken over the source, every header beside it, the flags, the compiler and the architecture, so that an edited source or another
compiler builds afresh and never loads a stale file. A build takes a fraction of a second and
happens once; it is written under a temporary name and renamed, so that a process that is
killed mid-build, or two that build at once, never leave half a library to load.

Nothing here is required: without a C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang`` on
the PATH), or where the build fails, ``load`` answers None and the caller keeps PyTorch's own
kernel. ``LMFORGE_KERNELS=aten`` asks for that everywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from lmforge.fileio import temporary_file
from lmforge.hardware import cache_dir

KERNELS_ENV = "LMFORGE_KERNELS"
# -ffinite-math-only and -fno-signed-zeros let a clamp compile to min/max (see gelu_tanh.c);
# -fno-math-errno lets sqrtf be one instruction
FLAGS = (
    "-O3",
    "-fno-trapping-math",
    "-ffinite-math-only",
    "-fno-signed-zeros",
    "-fno-math-errno",
    "-fPIC",
    "-shared",
)
# threads through OpenMP, PyTorch's own runtime where it is libgomp (see gelu_tanh.c); a compiler
# without OpenMP (Apple's clang) builds the same source single-threaded
THREADING = (("-fopenmp",), ())
BUILD_TIMEOUT_S = 120


def kernels_wanted() -> bool:
    """False when ``LMFORGE_KERNELS=aten`` asks for PyTorch's kernels only."""
    return os.environ.get(KERNELS_ENV, "").strip().lower() != "aten"


def find_compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def library_path(name: str, compiler: str, flags: tuple[str, ...]) -> Path:
    here = Path(__file__).parent
    sources = [(here / f"{name}.c").read_bytes()] + [
        header.read_bytes() for header in sorted(here.glob("*.h"))
    ]
    identity = b"\0".join(
        [*sources, " ".join(flags).encode(), compiler.encode(), platform.machine().encode()]
    )
    return cache_dir() / "kernels" / f"{name}-{hashlib.sha256(identity).hexdigest()[:16]}.so"


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled ``kernels/<name>.c``, built on first use; None where it cannot be had."""
    compiler = find_compiler()
    if compiler is None:
        return None
    candidates = [library_path(name, compiler, FLAGS + threading) for threading in THREADING]
    for path in candidates:
        if path.exists():
            with contextlib.suppress(OSError):  # unreadable or truncated: build it again below
                return ctypes.CDLL(str(path))
    source = Path(__file__).with_name(f"{name}.c")
    for path, threading in zip(candidates, THREADING):
        if build([compiler, *FLAGS, *threading, "-o"], source, path):
            with contextlib.suppress(OSError):
                return ctypes.CDLL(str(path))
    return None


def build(command: list[str], source: Path, path: Path) -> bool:
    """Run ``command + [temporary, source]``, then rename the output to ``path``; False on any failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = temporary_file(path, suffix=".so")
    except OSError:
        return False
    os.close(handle)
    try:
        done = subprocess.run(
            [*command, temporary, str(source)], capture_output=True, timeout=BUILD_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            return False
        os.replace(temporary, path)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
