"""Source/target pair readers: .jsonl, .tsv, parallel files and builtin tasks, and one clear line
for each kind of bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmforge.data.pairs import Pair, describe_pairs, read_pairs, resolve_pairs, unescape_tsv
from lmforge.errors import DataError, UserInputError


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def pairs_of(specs, **fields) -> list[tuple[str, str]]:
    return [(p.source, p.target) for p in read_pairs(resolve_pairs(specs, **fields), **fields)]


def test_jsonl_default_fields_in_order_blank_lines_skipped(tmp_path):
    path = write(
        tmp_path / "p.jsonl",
        '{"source": "Go.", "target": "Va !"}\n\n{"target": "Cours !", "source": "Run!", "id": 3}\n',
    )
    pairs = read_pairs(resolve_pairs([str(path)]))
    assert [(p.source, p.target) for p in pairs] == [("Go.", "Va !"), ("Run!", "Cours !")]
    assert pairs[1].origin == f"{path}:3"  # the blank line still counts


def test_jsonl_named_fields(tmp_path):
    path = write(tmp_path / "p.jsonl", json.dumps({"en": "Hello", "fr": "Bonjour"}) + "\n")
    assert pairs_of([str(path)], source_field="en", target_field="fr") == [("Hello", "Bonjour")]


def test_jsonl_missing_field_names_line_field_and_fields_present(tmp_path):
    path = write(tmp_path / "p.jsonl", '{"source": "a", "target": "b"}\n{"source": "c", "tgt": "d"}\n')
    with pytest.raises(DataError) as error:
        pairs_of([str(path)])
    message = str(error.value)
    assert f"{path}:2" in message and "'target'" in message and "'source', 'tgt'" in message
    assert "--target-field" in message and "\n" not in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"source": "", "target": "b"}', "the source ('source') is empty"),
        ('{"source": "a", "target": "  "}', "the target ('target') is empty"),
        ('{"source": "a", "target": 3}', "is a JSON int, not a string"),
        ('["a", "b"]', "a JSON list, not an object"),
        ('{"source": "a",', "not valid JSON"),
    ],
)
def test_jsonl_bad_lines(tmp_path, line, expected):
    path = write(tmp_path / "p.jsonl", '{"source": "x", "target": "y"}\n' + line + "\n")
    with pytest.raises(DataError) as error:
        pairs_of([str(path)])
    assert f"{path}:2: " in str(error.value) and expected in str(error.value)


def test_tsv_two_columns_with_linear_tsv_escapes(tmp_path):
    path = write(tmp_path / "p.tsv", 'say "hi"\tdis « salut »\r\na\\tb\tc\\nd \\\\ \\x\n\n')
    assert pairs_of([str(path)]) == [('say "hi"', "dis « salut »"), ("a\tb", "c\nd \\ \\x")]


def test_unescape_tsv_reads_an_escaped_backslash_before_a_letter_as_a_backslash():
    # "\\\\t" on disk is an escaped backslash followed by t, not a tab
    assert unescape_tsv("\\\\t") == "\\t"
    assert unescape_tsv("\\t") == "\t"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("only one column", "1 tab-separated field;"),
        ("a\tb\tc", "3 tab-separated fields"),
        ("\tb", "source is empty"),
    ],
)
def test_tsv_bad_lines(tmp_path, line, expected):
    path = write(tmp_path / "p.tsv", "x\ty\n" + line + "\n")
    with pytest.raises(DataError, match=expected) as error:
        pairs_of([str(path)])
    assert f"{path}:2" in str(error.value)


def test_parallel_files_pair_line_by_line(tmp_path):
    sources = write(tmp_path / "train.en", "Hello\nGood night\n")
    targets = write(tmp_path / "train.fr", "Bonjour\nBonne nuit")  # no final newline: same two lines
    assert pairs_of([str(sources), str(targets)]) == [("Hello", "Bonjour"), ("Good night", "Bonne nuit")]


def test_parallel_files_of_unequal_length(tmp_path):
    sources = write(tmp_path / "a.txt", "1\n2\n3\n")
    targets = write(tmp_path / "b.txt", "1\n2\n")
    with pytest.raises(DataError, match="has 3 lines but .* has 2") as error:
        pairs_of([str(sources), str(targets)])
    assert str(sources) in str(error.value) and str(targets) in str(error.value)


def test_parallel_files_empty_line_names_the_file_and_line(tmp_path):
    sources = write(tmp_path / "a.txt", "1\n2\n3\n")
    targets = write(tmp_path / "b.txt", "1\n\n3\n")
    with pytest.raises(DataError, match=re.escape(f"{targets}:2: the target is an empty line")):
        pairs_of([str(sources), str(targets)])


def test_undecodable_bytes_name_the_line(tmp_path):
    path = write(tmp_path / "p.tsv", b"a\tb\nc\xff\td\n")
    with pytest.raises(DataError, match=r"line 2\) is not valid UTF-8"):
        pairs_of([str(path)])
    pairs = read_pairs(resolve_pairs([str(path)]), errors="replace")
    assert pairs[1].source == "c\ufffd"


@pytest.mark.parametrize("name", ["p.jsonl", "p.tsv"])
def test_an_empty_file_holds_no_pairs(tmp_path, name):
    path = write(tmp_path / name, "\n  \n")
    with pytest.raises(DataError, match="empty or only blank lines: no pairs"):
        pairs_of([str(path)])


def test_empty_parallel_files(tmp_path):
    a, b = write(tmp_path / "a.txt", ""), write(tmp_path / "b.txt", "")
    with pytest.raises(DataError, match="are empty: no pairs"):
        pairs_of([str(a), str(b)])


def test_sources_that_hold_no_pairs_are_refused(tmp_path):
    text = write(tmp_path / "a.txt", "hello\n")
    jsonl = write(tmp_path / "p.jsonl", '{"source": "a", "target": "b"}\n')
    with pytest.raises(DataError, match="one text file, which holds no pairs"):
        resolve_pairs([str(text)])
    with pytest.raises(DataError, match="parallel files are plain text"):
        resolve_pairs([str(text), str(jsonl)])
    with pytest.raises(DataError, match="3 sources given"):
        resolve_pairs([str(text)] * 3)
    with pytest.raises(DataError, match="no such file"):
        resolve_pairs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(DataError, match="is a directory"):
        resolve_pairs([str(tmp_path)])
    with pytest.raises(DataError, match="language-model corpus"):
        resolve_pairs(["builtin:stdlib-docs"])
    with pytest.raises(DataError, match="builtin:nope is unknown"):
        resolve_pairs(["builtin:nope"])


def test_field_flags_only_for_jsonl(tmp_path):
    path = write(tmp_path / "p.tsv", "a\tb\n")
    with pytest.raises(UserInputError, match="--source-field name fields of a .jsonl file"):
        resolve_pairs([str(path)], source_field="en")


def test_builtin_task_pairs():
    pairs = read_pairs(resolve_pairs(["builtin:reverse?length=3,size=5,alphabet=4"]))
    assert len(pairs) == 5 and all(p.target == p.source[::-1] and len(p.source) == 3 for p in pairs)
    assert all(p.group is None for p in pairs)


def test_describe_pairs_sha256_of_the_file_as_sha256sum_prints_it(tmp_path):
    import hashlib

    content = b'{"source": "a", "target": "b"}\n'
    path = write(tmp_path / "p.jsonl", content)
    source = resolve_pairs([str(path)])
    entry = describe_pairs(source, read_pairs(source), "source", "target")
    assert entry["sha256"] == hashlib.sha256(content).hexdigest()
    assert entry["bytes"] == len(content) and entry["pairs"] == 1 and entry["kind"] == "jsonl"


def test_describe_builtin_sha256_over_the_pairs_text():
    import hashlib

    source = resolve_pairs(["builtin:copy?length=2,size=3,alphabet=3"])
    pairs = read_pairs(source)
    expected = hashlib.sha256(b"".join(f"{p.source}\0{p.target}\0".encode() for p in pairs)).hexdigest()
    assert describe_pairs(source, pairs, "source", "target")["sha256"] == expected


def test_pair_is_a_plain_record():
    assert Pair("a", "b", "x:1") == Pair("a", "b", "x:1", None)
