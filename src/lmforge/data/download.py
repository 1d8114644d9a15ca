"""Download a corpus once into the cache, so ``--data https://...`` reads like a local file.

    fetch("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt")
      -> ~/.cache/lmforge/downloads/3f0c2a.../input.txt          (first use: downloaded, with a bar)
      -> the same path, no network                                 (every later use)

A source may end in ``#sha256=HEX``: the bytes must have that digest or nothing is kept. Without
one, the digest of the first download is recorded beside the file (``input.txt.sha256``, in
``sha256sum`` format) and every later use checks the file against it (trust on first use), so a
cached corpus that changed on disk is noticed rather than silently trained on.

The bytes go to a temporary ``.part`` name in the same directory and are renamed into place only
when complete and verified, so an interrupted or failed download never looks like a cached one.
A dropped connection is retried (``RETRIES`` attempts), resuming with an HTTP ``Range`` request
when the server honours it (206) and starting over when it does not (200). Failures that retrying
cannot fix (no network, an unknown host, HTTP 404) stop at once with one ``DownloadError`` line.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge import __version__
from lmforge.data.builtin import cache_dir
from lmforge.errors import DownloadError
from lmforge.fileio import atomic_write_text, temporary_file

URL_PREFIXES = ("https://", "http://")
CHECKSUM_MARK = "#sha256="
RETRIES = 4  # attempts in all, the first included
RETRY_DELAYS = (1.0, 3.0, 10.0)  # seconds before the 2nd, 3rd, 4th attempt
TIMEOUT = 30.0  # seconds without a byte before an attempt counts as dropped
CHUNK = 1 << 16
RECORD_SUFFIX = ".sha256"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def is_url(spec: str) -> bool:
    return str(spec).lower().startswith(URL_PREFIXES)


def split_checksum(spec: str) -> tuple[str, str | None]:
    """``"URL#sha256=HEX"`` -> ``("URL", "hex")``; a malformed digest is a ``DownloadError``."""
    url, mark, digest = str(spec).partition(CHECKSUM_MARK)
    if not mark:
        return url, None
    digest = digest.strip().lower()
    if not _HEX64.match(digest):
        raise DownloadError(
            f"{spec}: the part after {CHECKSUM_MARK} must be 64 hexadecimal digits (what sha256sum prints)"
        )
    return url, digest


def cached_path(url: str) -> Path:
    """Where ``url`` is kept: ``downloads/<hash of the URL>/<its file name>`` under the cache."""
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rpartition("/")[2])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "download"
    return cache_dir() / "downloads" / key / name


def is_cached(url: str) -> bool:
    return cached_path(url).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256(path: Path) -> str | None:
    """The digest written beside ``path`` when it was downloaded, if it is there and readable."""
    try:
        digest = (path.parent / (path.name + RECORD_SUFFIX)).read_text(encoding="ascii").split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return digest.lower() if _HEX64.match(digest.lower()) else None


def _write_record(path: Path, digest: str) -> None:
    atomic_write_text(path.parent / (path.name + RECORD_SUFFIX), f"{digest}  {path.name}\n")


def fetch(url: str, *, sha256: str | None = None, label: str | None = None) -> Path:
    """The cached copy of ``url``, downloading it first when it is not there (see the module doc).

    Args:
        url: an http:// or https:// address (a ``#sha256=HEX`` suffix is honoured too).
        sha256: the digest the bytes must have; None trusts the first download.
        label: what the progress bar calls the file (default: its name).
    """
    url, given = split_checksum(url)
    expected = (sha256 or given or "").lower() or None
    if sha256 and given and sha256.lower() != given:
        raise DownloadError(f"{url}: two different sha256 digests were given ({given} and {sha256})")
    path = cached_path(url)
    if path.is_file():
        digest = file_sha256(path)
        recorded = recorded_sha256(path)
        if digest == (expected or recorded or digest):
            if recorded is None:
                _write_record(path, digest)
            return path
        if expected is None:
            raise DownloadError(
                f"{path} no longer has the sha256 recorded when it was downloaded ({recorded}; now {digest}): "
                f"the cached copy was changed or damaged; delete that directory to download {url} again"
            )
        # the cached copy is not the one asked for: download again, verified like the first time
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = temporary_file(path, suffix=".part")
    os.close(handle)
    part = Path(name)
    try:
        _download(url, part, label or path.name)
        digest = file_sha256(part)
        if expected is not None and digest != expected:
            size = part.stat().st_size
            raise DownloadError(
                f"{url}: sha256 mismatch: expected {expected}, got {digest} ({size:,} bytes); the file changed "
                "at its source or was damaged on the way, so nothing was kept"
            )
        os.replace(part, path)
        _write_record(path, digest)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty: a failure leaves the cache as it was
        raise
    return path


class _Dropped(Exception):
    """An attempt that ended before the last byte: worth another try."""


def _download(url: str, part: Path, label: str) -> None:
    """Fill ``part`` with the bytes of ``url``, resuming or restarting after a dropped connection."""
    last = ""
    with _progress(label) as bar:
        for attempt in range(1, RETRIES + 1):
            try:
                _attempt(url, part, bar)
                return
            except urllib.error.HTTPError as error:
                if error.code == 416:  # our Range is past the end: the file changed; start over
                    part.write_bytes(b"")
                elif not (error.code >= 500 or error.code in (408, 429)):
                    hint = "check the address" if error.code in (404, 410) else "the server refused it"
                    raise DownloadError(
                        f"cannot download {url}: HTTP {error.code} {error.reason}; {hint}"
                    ) from None
                last = f"HTTP {error.code} {error.reason}"
            except urllib.error.URLError as error:
                reason = error.reason
                if isinstance(reason, socket.gaierror):
                    host = urllib.parse.urlsplit(url).hostname
                    raise DownloadError(
                        f"cannot download {url}: the host {host} cannot be found ({reason.strerror}); "
                        "are you offline? Connect, or download the file elsewhere and pass its path"
                    ) from None
                if isinstance(reason, (ConnectionRefusedError, ssl.SSLError)):
                    raise DownloadError(f"cannot download {url}: {_describe(reason)}") from None
                last = _describe(reason)
            except (_Dropped, http.client.HTTPException, OSError) as error:
                last = _describe(error)
            if attempt < RETRIES:
                time.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1])
    raise DownloadError(
        f"cannot download {url}: {last} ({RETRIES} attempts); check the connection and run again "
        "(nothing was kept in the cache)"
    )


def _attempt(url: str, part: Path, bar: Any) -> None:
    have = part.stat().st_size
    headers = {"User-Agent": f"lmforge/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        if have and response.status == 206 and _range_start(response) == have:
            mode = "ab"
        else:  # a fresh start, or a server that sends the whole file again
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        bar.reset(total=None if expected is None else have + expected)
        bar.update(have)
        received = 0
        with part.open(mode) as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if expected is not None and received < expected:
            raise _Dropped(f"the connection closed after {have + received:,} of {have + expected:,} bytes")


def _range_start(response: Any) -> int | None:
    """The first byte of a 206 reply (``Content-Range: bytes 500-999/1000`` -> 500)."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _describe(error: BaseException) -> str:
    if isinstance(error, http.client.IncompleteRead):
        return f"the connection closed after {len(error.partial):,} more bytes"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"no data for {TIMEOUT:.0f} s"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without a reply"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server up? are you offline?)"
    text = str(error) or type(error).__name__
    return getattr(error, "strerror", None) or text


class _NoBar:
    def reset(self, total: int | None = None) -> None:
        pass

    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A byte progress bar on stderr when it is a terminal (tqdm is not imported otherwise)."""
    if not sys.stderr.isatty():
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(
        desc=f"downloading {label}",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
    ) as bar:
        yield bar
