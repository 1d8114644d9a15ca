"""Built-in seq2seq tasks: the synthetic copy/reverse/sort pairs and builtin:stdlib-signatures."""

from __future__ import annotations

import collections
import inspect
import json

import pytest

from lmforge.data import seq2seq_tasks
from lmforge.data.seq2seq_tasks import (
    describe_task,
    extract_stdlib_signatures,
    is_task,
    module_signatures,
    parse_task,
    stdlib_signatures,
    task_pairs,
)
from lmforge.errors import DataError


def test_parse_task_defaults_and_options():
    assert parse_task("builtin:reverse") == (
        "reverse",
        {"min_length": 8, "max_length": 16, "size": 5000, "alphabet": 10, "seed": 0},
    )
    name, options = parse_task("builtin:sort?length=17-32,size=20&alphabet=3,seed=7")
    assert name == "sort" and options == {
        "min_length": 17,
        "max_length": 32,
        "size": 20,
        "alphabet": 3,
        "seed": 7,
    }
    assert (
        parse_task("builtin:copy?length=4")[1]["min_length"]
        == parse_task("builtin:copy?length=4")[1]["max_length"]
        == 4
    )
    assert is_task("builtin:copy?size=3") and not is_task("builtin:stdlib-docs") and not is_task("copy")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("builtin:copy?length=9-3", "runs backwards"),
        ("builtin:copy?length=a-3", "'a' is not a whole number"),
        ("builtin:copy?size=0", "size must be between 1"),
        ("builtin:copy?alphabet=27", "alphabet must be between 1 and 26"),
        ("builtin:copy?colour=red", "unknown option 'colour'"),
        ("builtin:copy?size", "not KEY=VALUE"),
        ("builtin:stdlib-signatures?size=3", "takes no options"),
        ("builtin:rot13", "unknown built-in seq2seq task"),
    ],
)
def test_bad_task_specs_say_what_is_wrong(spec, expected):
    with pytest.raises(DataError, match=expected):
        parse_task(spec)


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_synthetic_pairs_follow_their_rule(name):
    pairs = task_pairs(f"builtin:{name}?length=5-9,size=300,alphabet=6,seed=3")
    assert len(pairs) == 300 and len({p.source for p in pairs}) == 300  # distinct sources
    for pair in pairs:
        assert 5 <= len(pair.source) <= 9 and set(pair.source) <= set("abcdef")
        assert collections.Counter(pair.target) == collections.Counter(pair.source)  # same letters
        if name == "copy":
            assert pair.target == pair.source
        elif name == "reverse":
            assert all(pair.target[i] == pair.source[-1 - i] for i in range(len(pair.source)))
        else:
            assert all(a <= b for a, b in zip(pair.target, pair.target[1:]))
    assert {len(p.source) for p in pairs} == set(range(5, 10))  # every length drawn


def test_synthetic_pairs_are_deterministic_given_the_seed():
    first = task_pairs("builtin:reverse?size=50,seed=1")
    assert first == task_pairs("builtin:reverse?size=50,seed=1")
    assert first != task_pairs("builtin:reverse?size=50,seed=2")


def test_too_many_distinct_strings_are_refused():
    # lengths 1-2 over 2 letters: 2 + 4 = 6 strings exist
    with pytest.raises(DataError, match=r"too many \(6 exist\)"):
        task_pairs("builtin:copy?length=1-2,alphabet=2,size=5")


def test_describe_task():
    assert describe_task("builtin:reverse?length=4,size=9") == (
        "reverse a random string of letters: 9 pairs, length 4, 10 letters, seed 0"
    )


SOURCE = b'''
"""Module docstring."""

def dumps(obj, *, skipkeys=False, **kw):
    """Serialize obj.

    More text.
    """

def _private(x):
    """Hidden."""

def undocumented(x):
    pass

class Encoder:
    def encode(self, o, level=2):
        """Return a string."""

    @classmethod
    def build(cls, /, a):
        """Make one."""

    @staticmethod
    def helper(self_like, b=1):
        """A static helper."""

    def _skip(self):
        """No."""

class _Hidden:
    def method(self):
        """Never seen."""
'''


def test_module_signatures_public_documented_functions_and_methods_without_self():
    assert module_signatures("json", SOURCE) == [
        ("json.dumps(obj, *, skipkeys=False, **kw)", "Serialize obj."),
        ("json.Encoder.encode(o, level=2)", "Return a string."),
        ("json.Encoder.build(a)", "Make one."),
        ("json.Encoder.helper(self_like, b=1)", "A static helper."),
    ]


def test_extract_skips_private_and_test_modules(tmp_path):
    for relative in ("json/__init__.py", "_pyjson.py", "test/test_json.py", "pkg/_inner.py"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SOURCE)
    modules = {module for module, _, _ in extract_stdlib_signatures(tmp_path)}
    assert modules == {"json"}


def test_stdlib_signatures_match_what_inspect_says_of_the_live_functions():
    """The signature text and docstring line agree with ``inspect`` on the imported functions."""
    by_signature = {signature: (module, line) for module, signature, line in stdlib_signatures()}
    cases = [
        (json.dumps, "json", "json.dumps"),  # named by the module that defines it
        (
            json.JSONEncoder(indent=2).encode,
            "json.encoder",
            "json.encoder.JSONEncoder.encode",
        ),  # bound: no self
    ]
    for function, module, name in cases:
        signature = f"{name}{inspect.signature(function)}"
        assert by_signature[signature] == (module, inspect.getdoc(function).splitlines()[0])


def test_stdlib_signatures_are_cached_per_python_version(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    calls = []

    def fake() -> list[tuple[str, str, str]]:
        calls.append(1)
        return [("m", "m.f(x)", "Do f.")]

    monkeypatch.setattr(seq2seq_tasks, "extract_stdlib_signatures", fake)
    monkeypatch.setattr(seq2seq_tasks, "_IN_MEMORY", {})
    assert stdlib_signatures() == [("m", "m.f(x)", "Do f.")]
    (cached,) = tmp_path.glob("stdlib-signatures-*.json")
    monkeypatch.setattr(seq2seq_tasks, "_IN_MEMORY", {})
    assert stdlib_signatures() == [("m", "m.f(x)", "Do f.")] and len(calls) == 1  # read back
    cached.write_text("{damaged", encoding="utf-8")
    monkeypatch.setattr(seq2seq_tasks, "_IN_MEMORY", {})
    assert stdlib_signatures() == [("m", "m.f(x)", "Do f.")] and len(calls) == 2  # rebuilt
    pairs = task_pairs("builtin:stdlib-signatures")
    assert [(p.source, p.target, p.group) for p in pairs] == [("m.f(x)", "Do f.", "m")]
