"""Downloads through a real HTTP server on 127.0.0.1: cached once, verified, retried, refused in one line.

The truth each test compares against is the server's own bytes (and ``hashlib`` of them), and
the server's log of the requests it answered.
"""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from lmforge.cli import main
from lmforge.data import download
from lmforge.data.corpora import describe_sources, iter_texts
from lmforge.data.prepare import load_prepared
from lmforge.errors import DownloadError
from tests.data.conftest import CORPUS, cached_files

PATH = "/corpus/input.txt"
DATA = CORPUS.encode("utf-8")
SHA = hashlib.sha256(DATA).hexdigest()


def test_downloads_once_then_reads_the_cache_without_asking_the_server(cache, server):
    url = server.url(PATH)
    first = download.fetch(url)
    assert first.read_bytes() == DATA
    assert first.is_relative_to(cache) and first.name == "input.txt"
    assert download.recorded_sha256(first) == SHA
    assert len(server.requests) == 1
    assert download.fetch(url) == first
    assert list(iter_texts([url])) == [CORPUS]
    assert len(server.requests) == 1  # the second and third uses never reached the server
    assert cached_files(cache) == sorted([first, first.with_name("input.txt.sha256")])


def test_checksum_suffix_is_checked_and_recorded_in_the_metadata(cache, server):
    spec = f"{server.url(PATH)}#sha256={SHA.upper()}"
    (described,) = describe_sources([spec])
    assert described["kind"] == "url" and described["url"] == server.url(PATH)
    assert described["sha256"] == SHA and described["bytes"] == len(DATA) and described["documents"] == 1


def test_checksum_mismatch_keeps_nothing(cache, server):
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError, match=f"sha256 mismatch: expected {wrong}, got {SHA}"):
        download.fetch(f"{server.url(PATH)}#sha256={wrong}")
    assert cached_files(cache) == []


def test_malformed_checksum_is_refused_before_any_request(cache, server):
    with pytest.raises(DownloadError, match="64 hexadecimal digits"):
        list(iter_texts([f"{server.url(PATH)}#sha256=abc"]))
    assert server.requests == []


def test_dropped_connection_resumes_with_a_range_request(cache, server):
    server.drops, server.drop_after = 1, 1000
    path = download.fetch(server.url(PATH))
    assert path.read_bytes() == DATA
    assert [request.range for request in server.requests] == [None, "bytes=1000-"]


def test_dropped_connection_restarts_when_the_server_ignores_range(cache, server):
    server.ranges, server.drops, server.drop_after = False, 2, 700
    path = download.fetch(server.url(PATH))
    assert path.read_bytes() == DATA  # not the first 700 bytes twice
    assert [request.range for request in server.requests] == [None, "bytes=700-", "bytes=700-"]


def test_connection_that_always_drops_fails_after_the_retries_and_keeps_nothing(cache, server):
    server.drops, server.drop_after = 99, 10
    with pytest.raises(DownloadError, match=rf"closed after .* bytes \({download.RETRIES} attempts\)"):
        download.fetch(server.url(PATH))
    assert len(server.requests) == download.RETRIES
    assert cached_files(cache) == []


def test_404_fails_at_once_and_keeps_nothing(cache, server):
    with pytest.raises(DownloadError, match="HTTP 404 Not Found; check the address"):
        download.fetch(server.url("/corpus/missing.txt"))
    assert len(server.requests) == 1  # not retried
    assert cached_files(cache) == []


def test_refused_connection_says_so(cache):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="connection refused"):
        download.fetch(f"http://127.0.0.1:{port}/input.txt")
    assert cached_files(cache) == []


def test_unknown_host_says_offline(cache, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError, match="the host corpora.example cannot be found .* are you offline"):
        download.fetch("https://corpora.example/input.txt")
    assert cached_files(cache) == []


def test_a_cached_file_changed_on_disk_is_caught_by_its_recorded_digest(cache, server):
    path = download.fetch(server.url(PATH))
    path.write_bytes(DATA[:-1] + b"?")
    with pytest.raises(DownloadError, match="no longer has the sha256 recorded"):
        download.fetch(server.url(PATH))
    assert len(server.requests) == 1


def test_a_cached_file_that_is_not_the_one_asked_for_is_downloaded_again(cache, server):
    path = download.fetch(server.url(PATH))
    path.write_bytes(b"damaged")
    assert download.fetch(server.url(PATH), sha256=SHA).read_bytes() == DATA
    assert len(server.requests) == 2


# --- through the command line -----------------------------------------------------------------


def run(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_prepare_from_a_url(cache, server, tmp_path, capsys):
    out = tmp_path / "d"
    status, _, err = run(
        ["prepare", "--data", server.url(PATH), "--tokenizer", "char", "--out", str(out)], capsys
    )
    assert status == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sources"][0]["url"] == server.url(PATH) and meta["sources"][0]["sha256"] == SHA
    assert meta["characters"] == len(CORPUS)
    assert len(load_prepared(out).split("train")) + len(load_prepared(out).split("val")) == len(CORPUS) + 1


@pytest.mark.parametrize(
    ("setup", "path", "message"),
    [
        ("mismatch", PATH, "sha256 mismatch"),
        ("drops", PATH, f"({download.RETRIES} attempts)"),
        ("none", "/corpus/missing.txt", "HTTP 404 Not Found"),
    ],
)
def test_failed_downloads_through_the_cli_print_one_line(
    cache, server, tmp_path, capsys, setup, path, message
):
    url = server.url(path)
    if setup == "mismatch":
        url += "#sha256=" + "0" * 64
    if setup == "drops":
        server.drops = 99
    for argv in (
        ["prepare", "--data", url, "--tokenizer", "char", "--out", str(tmp_path / "d")],
        ["tokenizer", "train", "--kind", "char", "--data", url, "--out", str(tmp_path / "tok")],
    ):
        status, out, err = run(argv, capsys)
        assert status == 2
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
        assert out == ""
        assert cached_files(cache) == []
    assert not (tmp_path / "d").exists() and not (tmp_path / "tok").exists()
