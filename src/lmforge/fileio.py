"""Write files and directories so that a crash or Ctrl-C never leaves half a result behind.

Everything lmforge writes goes to a temporary name beside its destination and is renamed into
place only when complete; ``os.replace`` is atomic on one filesystem. The temporary names come
from ``tempfile``, which makes them owner-only (0600 files, 0700 directories) so that no one else
can race for them; before the rename they get the mode any other tool's output would have under
the process's umask (0644 and 0755 under umask 022), so a result can be shared like any file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import OutputExistsError


def current_umask() -> int:
    """The process's umask (Linux reports it in /proc; elsewhere set and restore it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def directory_mode() -> int:
    """The mode ``mkdir`` would give a new directory: 0777 less the umask."""
    return 0o777 & ~current_umask()


def temporary_file(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """(fd, name) of a new file beside ``path``, with the mode a plain new file would have."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    with contextlib.suppress(OSError):  # a filesystem without modes keeps its own
        os.chmod(tmp, file_mode())
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class OutputKind:
    """What a command writes into its output directory: ``marker`` always, nothing outside ``known``.

    A directory is a previous output of this kind when it holds the marker and only known
    names; only such a directory may be replaced, and only with ``--overwrite``.
    """

    name: str  # "tokenizer", "prepared dataset", "run"
    marker: str
    known: frozenset[str]


TOKENIZER_OUTPUT = OutputKind(
    "tokenizer", "lmforge_tokenizer.json", frozenset({"lmforge_tokenizer.json", "tokenizer.json"})
)
DATASET_OUTPUT = OutputKind(
    "prepared dataset", "meta.json", frozenset({"meta.json", "train.bin", "val.bin", "tokenizer"})
)
HF_MODEL_OUTPUT = OutputKind(
    "Hugging Face model",
    "config.json",
    frozenset(
        {
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "lmforge_tokenizer.json",
            "vocab.txt",
            "vocab.json",
            "merges.txt",
        }
    ),
)


def check_output_dir(
    out: str | os.PathLike[str],
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str]] = (),
    kind: OutputKind | None = None,
) -> Path:
    """Refuse an existing, non-empty output directory unless it is a previous output of ``kind``
    and ``overwrite`` is given; say how to proceed.

    Never, ``overwrite`` or not, a directory with files the command does not write (someone
    else's), nor one that holds (or is) one of the command's ``inputs`` or the working
    directory: replacing it would delete what the command did not write.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        resolved = out.resolve()
        for path in [*inputs, Path.cwd()]:
            if Path(path).exists() and Path(path).resolve().is_relative_to(resolved):
                what = "the working directory" if path == Path.cwd() else f"the input {path}"
                raise OutputExistsError(
                    f"--out {out} holds {what}; replacing it would delete it: choose another --out"
                )
        if kind is not None:
            entries = {entry.name for entry in out.iterdir()}
            unknown = sorted(entries - kind.known)
            if unknown or kind.marker not in entries:
                shown = ", ".join(unknown[:3]) or "files"
                raise OutputExistsError(
                    f"{out} holds files that are not a {kind.name} ({shown}); lmforge will not delete "
                    "them: choose another --out"
                )
        if not overwrite:
            raise OutputExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    return out


@contextlib.contextmanager
def atomic_directory(
    out: str | os.PathLike[str],
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
    kind: OutputKind | None = None,
) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block finishes.

    On any exception (Ctrl-C included) the temporary directory is removed and ``out``, if it
    existed, is left exactly as it was.
    """
    out = check_output_dir(out, overwrite, inputs, kind).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    with contextlib.suppress(OSError):
        os.chmod(tmp, directory_mode())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replace_previous_output(
    out: str | os.PathLike[str],
    *,
    overwrite: bool,
    marker: str,
    known: frozenset[str],
    kind: str,
    hint: str = "",
) -> Path:
    """Make ``out`` an empty directory, deleting only a previous output of the same kind.

    A directory is that kind's previous output when it holds ``marker`` and nothing outside
    ``known`` (the names such an output has). Anything else, ``overwrite`` or not, is refused:
    lmforge never deletes what it did not write, nor the working directory or one above it.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        entries = {entry.name for entry in out.iterdir()}
        unknown = sorted(entries - known)
        if unknown or marker not in entries:
            shown = ", ".join(unknown[:3]) or "files"
            raise OutputExistsError(
                f"{out} holds files that are not a {kind} ({shown}); lmforge will not delete them: "
                "choose another --out"
            )
        if Path.cwd().resolve().is_relative_to(out.resolve()):
            raise OutputExistsError(f"{out} is the working directory or holds it; choose another --out")
        if not overwrite:
            raise OutputExistsError(f"{out} already holds a {kind}; pass --overwrite to replace it{hint}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out
