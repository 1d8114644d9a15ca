"""Sources -> documents: each kind of --data gives the documents written by hand here."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest

from lmforge.data import builtin
from lmforge.data.corpora import Document, describe_sources, iter_documents, iter_texts
from lmforge.errors import DataError, UserInputError


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- each source kind -------------------------------------------------------------------------


def test_text_file_is_one_document_with_its_exact_text(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    path = write(tmp_path / "input.txt", text)
    assert list(iter_documents([str(path)])) == [Document(text, str(path))]


def test_byte_order_mark_is_dropped(tmp_path):
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbfhello")
    assert list(iter_texts([str(path)])) == ["hello"]


def test_directory_gives_one_document_per_txt_or_md_file_recursively_in_path_order(tmp_path):
    write(tmp_path / "corpus/b.txt", "bee")
    write(tmp_path / "corpus/a.md", "# a")
    write(tmp_path / "corpus/sub/c.txt", "sea")
    write(tmp_path / "corpus/notes.py", "print('not text')")
    write(tmp_path / "corpus/data.jsonl", '{"text": "not read from a directory"}')
    write(tmp_path / "corpus/.hidden/d.txt", "hidden")
    docs = list(iter_documents([str(tmp_path / "corpus")]))
    assert [d.text for d in docs] == ["# a", "bee", "sea"]
    assert [Path(d.origin).name for d in docs] == ["a.md", "b.txt", "c.txt"]


def test_glob_gives_one_document_per_match_and_reads_jsonl_matches_as_lines(tmp_path):
    write(tmp_path / "x/2.txt", "two")
    write(tmp_path / "x/1.txt", "one")
    write(tmp_path / "x/deep/3.txt", "three")
    write(tmp_path / "x/skip.md", "not matched")
    assert list(iter_texts([str(tmp_path / "x/*.txt")])) == ["one", "two"]
    assert list(iter_texts([str(tmp_path / "x/**/*.txt")])) == ["one", "two", "three"]
    write(tmp_path / "y/a.jsonl", '{"text": "l1"}\n{"text": "l2"}\n')
    assert list(iter_texts([str(tmp_path / "y/*.jsonl")])) == ["l1", "l2"]


def test_jsonl_gives_one_document_per_line_from_the_chosen_field(tmp_path):
    lines = [{"body": "first post", "id": 1}, {"body": "second\npost"}, {"body": "   "}, {"body": "third"}]
    path = write(tmp_path / "posts.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    docs = list(iter_documents([str(path)], text_field="body"))
    # the whitespace-only third line is skipped; blank lines are skipped; origins give line numbers
    assert docs == [
        Document("first post", f"{path}:1"),
        Document("second\npost", f"{path}:2"),
        Document("third", f"{path}:4"),
    ]


def test_several_sources_are_read_in_the_given_order(tmp_path):
    a = write(tmp_path / "a.txt", "A")
    b = write(tmp_path / "b.jsonl", '{"text": "B1"}\n{"text": "B2"}\n')
    assert list(iter_texts([str(b), str(a)])) == ["B1", "B2", "A"]


# --- bad input ----------------------------------------------------------------------------------


def test_missing_path_fails_before_any_document_is_read(tmp_path):
    good = write(tmp_path / "good.txt", "text")
    documents = iter_documents([str(good), str(tmp_path / "nope.txt")])
    with pytest.raises(DataError, match=r"nope\.txt: no such file or directory"):
        next(documents)


def test_no_sources_is_a_user_error():
    with pytest.raises(UserInputError, match="no data given"):
        list(iter_texts([]))


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("empty.txt", "", "empty or only whitespace"),
        ("blank.txt", " \n\t\n", "empty or only whitespace"),
        (
            "blank.jsonl",
            '\n{"text": ""}\n{"text": "  "}\n',
            "every line is blank or has an empty 'text' field",
        ),
    ],
)
def test_source_without_text_is_an_error(tmp_path, name, content, why):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match="yields no text") as error:
        list(iter_texts([str(path)]))
    assert why in str(error.value)


def test_directory_without_text_files_and_unmatched_glob_are_errors(tmp_path):
    write(tmp_path / "code/x.py", "pass")
    with pytest.raises(DataError, match=r"no \.txt or \.md files"):
        list(iter_texts([str(tmp_path / "code")]))
    with pytest.raises(DataError, match="matches no files"):
        list(iter_texts([str(tmp_path / "*.txt")]))


def test_undecodable_bytes_name_file_byte_offset_and_line(tmp_path):
    path = write(tmp_path / "latin1.txt", b"line one\ncaf" + b"\xe9 au lait\n")
    with pytest.raises(DataError) as error:
        list(iter_texts([str(path)]))
    message = str(error.value)
    assert str(path) in message and "byte offset 12 (line 2)" in message and "0xE9" in message
    assert "--errors replace" in message
    assert list(iter_texts([str(path)], errors="replace")) == ["line one\ncaf\ufffd au lait\n"]


def test_undecodable_bytes_in_jsonl_give_the_file_offset_and_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: byte offset 28 \(line 2\)"):
        list(iter_texts([str(path)]))
    assert list(iter_texts([str(path)], errors="replace")) == ["ok", "caf\ufffd"]


def test_jsonl_line_that_is_not_json_names_file_and_line(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "ok"}\n{"text": "unterminated\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid JSON"):
        list(iter_texts([str(path)]))


def test_jsonl_line_without_the_field_lists_the_fields_it_has(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "ok"}\n\n{"content": "x", "id": 3}\n')
    with pytest.raises(DataError) as error:
        list(iter_texts([str(path)]))
    assert f"{path}:3: no 'text' field (fields: 'content', 'id')" in str(error.value)
    assert "--text-field" in str(error.value)


@pytest.mark.parametrize(
    ("line", "what"), [('["a list"]', "a JSON list, not an object"), ('{"text": 5}', "int")]
)
def test_jsonl_line_of_the_wrong_shape_is_an_error(tmp_path, line, what):
    path = write(tmp_path / "d.jsonl", line + "\n")
    with pytest.raises(DataError, match=what):
        list(iter_texts([str(path)]))


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(DataError) as error:
        list(iter_texts(["builtin:wikipedia"]))
    assert "builtin:wikipedia" in str(error.value) and "builtin:stdlib-docs" in str(error.value)


# --- describing sources for metadata ---------------------------------------------------------------


def test_single_file_sha256_is_the_files_own_hash(tmp_path):
    data = b"some text\n" * 10
    path = write(tmp_path / "a.txt", data)
    (entry,) = describe_sources([str(path)])
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert (entry["bytes"], entry["files"], entry["documents"], entry["kind"]) == (len(data), 1, 1, "file")


def test_directory_sha256_is_that_of_its_sha256sum_listing(tmp_path):
    write(tmp_path / "c/b.txt", "bee")
    write(tmp_path / "c/sub/a.txt", "ay")
    # what `cd c && sha256sum b.txt sub/a.txt | sha256sum` computes
    listing = "".join(
        f"{hashlib.sha256(text.encode()).hexdigest()}  {name}\n"
        for name, text in [("b.txt", "bee"), ("sub/a.txt", "ay")]
    )
    (entry,) = describe_sources([str(tmp_path / "c")])
    assert entry["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert (entry["files"], entry["bytes"], entry["documents"]) == (2, 5, 2)


def test_sha256_listing_matches_the_sha256sum_tool(tmp_path):
    write(tmp_path / "c/b.txt", "bee")
    write(tmp_path / "c/sub/a.txt", "ay")
    try:
        listing = subprocess.run(
            ["sha256sum", "b.txt", "sub/a.txt"], cwd=tmp_path / "c", capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no sha256sum tool")
    (entry,) = describe_sources([str(tmp_path / "c")], count_documents=False)
    assert entry["sha256"] == hashlib.sha256(listing).hexdigest()


# --- builtin:stdlib-docs ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stdlib_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lmforge-cache")


@pytest.fixture(scope="session")
def stdlib_docs(stdlib_cache) -> list[tuple[str, str]]:
    """One extraction for the whole session, through the cache (which it fills)."""
    old = os.environ.get("LMFORGE_CACHE")
    os.environ["LMFORGE_CACHE"] = str(stdlib_cache)
    try:
        return builtin.builtin_documents("stdlib-docs")
    finally:
        if old is None:
            del os.environ["LMFORGE_CACHE"]
        else:
            os.environ["LMFORGE_CACHE"] = old


def test_stdlib_docs_hold_the_json_module_docstring(stdlib_docs):
    import json as json_module

    documents = dict(stdlib_docs)
    # the runtime __doc__ is an independent read of the same docstring
    assert inspect.cleandoc(json_module.__doc__) in documents["json"]
    assert inspect.cleandoc(json_module.dumps.__doc__) in documents["json"]
    assert documents["json"].startswith("JSON (JavaScript Object Notation)")


def test_stdlib_docs_leave_out_test_packages_and_idle(stdlib_docs):
    names = [name for name, _ in stdlib_docs]
    assert not [n for n in names if n.split(".")[0] in {"test", "idlelib", "turtledemo", "encodings"}]
    assert not [n for n in names if "tests" in n.split(".") or n.split(".")[-1].startswith("test_")]
    text = "\n".join(t for _, t in stdlib_docs)
    assert "Supporting definitions for the Python regression tests." not in text  # test.support's docstring


def test_stdlib_docs_are_one_document_per_module_in_path_order_and_sized_as_documented(stdlib_docs):
    names = [name for name, _ in stdlib_docs]
    assert len(names) == len(set(names)) > 300
    assert names.index("json") < names.index("json.decoder") < names.index("json.encoder")
    megabytes = sum(len(t.encode()) for _, t in stdlib_docs) / 1e6
    assert 1.0 < megabytes < 3.0  # ~1.66 MB on CPython 3.11


@pytest.mark.slow
def test_stdlib_docs_extraction_is_deterministic(stdlib_docs):
    assert builtin.extract_stdlib_docs() == stdlib_docs  # a second, uncached extraction


def test_stdlib_docs_extraction_is_cached(stdlib_docs, stdlib_cache, monkeypatch):
    (cache_file,) = stdlib_cache.iterdir()
    assert builtin.python_version().replace(" ", "-") in cache_file.name
    monkeypatch.setenv("LMFORGE_CACHE", str(stdlib_cache))
    monkeypatch.setitem(builtin.BUILTINS, "stdlib-docs", ("", lambda: pytest.fail("cache not used")))
    assert builtin.builtin_documents("stdlib-docs") == stdlib_docs


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    monkeypatch.setitem(builtin.BUILTINS, "tiny", ("tiny corpus", lambda: [("m", "doc text")]))
    assert builtin.builtin_documents("tiny") == [("m", "doc text")]
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_text("{ not json")
    builtin._IN_MEMORY.clear()  # as a new process would
    assert builtin.builtin_documents("tiny") == [("m", "doc text")]
    assert json.loads(cache_file.read_text())["documents"] == [["m", "doc text"]]


def test_builtin_documents_name_their_module_and_describe_the_python(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    monkeypatch.setitem(builtin.BUILTINS, "tiny", ("tiny corpus", lambda: [("a", "alpha"), ("b.c", "beta")]))
    assert list(iter_documents(["builtin:tiny"])) == [
        Document("alpha", "builtin:tiny:a"),
        Document("beta", "builtin:tiny:b.c"),
    ]
    (entry,) = describe_sources(["builtin:tiny"])
    assert entry["python_version"] == builtin.python_version()
    assert entry["sha256"] == hashlib.sha256(b"alpha\0beta\0").hexdigest()
    assert (entry["files"], entry["bytes"], entry["documents"]) == (2, 9, 2)
