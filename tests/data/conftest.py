"""Fixtures for the download tests: an empty cache of their own and a local HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lmforge.data import download
from tests.data.corpus_server import CorpusServer

CORPUS = "".join(f"Citizen {i}: we are accounted poor citizens, the patricians good.\n" for i in range(800))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """$LMFORGE_CACHE in a fresh directory, and retries without waiting."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LMFORGE_CACHE", str(root))
    monkeypatch.setattr(download, "RETRY_DELAYS", (0.0,))
    return root


@pytest.fixture
def server() -> Iterator[CorpusServer]:
    running = CorpusServer({"/corpus/input.txt": CORPUS.encode("utf-8")}).start()
    yield running
    running.stop()


@pytest.fixture
def hf_offline(tmp_path, monkeypatch) -> None:
    """No hub access for ``datasets``: the offline switches on, and its cache in the test's directory."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if hasattr(datasets.config, "HF_HUB_OFFLINE"):
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def cached_files(root: Path) -> list[Path]:
    """Every file under the cache: what a failed download must not leave behind."""
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []
