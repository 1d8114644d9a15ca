"""Built-in sequence-to-sequence tasks: source/target pairs every Python installation can make,
so an encoder-decoder model can be trained and measured without a download.

    builtin:stdlib-signatures   "json.dumps(obj, *, skipkeys=False, ensure_ascii=True, ...)"
                                 -> "Serialize ``obj`` to a JSON formatted ``str``."
    builtin:copy                "hdbaefc"  -> "hdbaefc"
    builtin:reverse             "hdbaefc"  -> "cfeabdh"
    builtin:sort                "hdbaefc"  -> "abcdefh"

``stdlib-signatures`` pairs the signature of every public function and method written in Python
in the running interpreter's standard library (``ast.unparse`` of its arguments, with ``self``
and ``cls`` left out) with the first line of its docstring; functions without a docstring are
skipped, and so are private modules (``_pydecimal`` repeats ``decimal``) and the modules
``builtin:stdlib-docs`` leaves out (tests, IDLE, ...). Each pair belongs to its module, and the
split holds out whole modules (``group`` below), so validation asks for docstrings of modules the
model never saw: generalisation, not recall of near-duplicate methods. On CPython 3.11.7 that is
4,141 pairs in 297 modules; the figure depends on the Python version, which the
metadata records, and the extraction is cached like ``builtin:stdlib-docs``'s.

The synthetic tasks draw ``size`` distinct random strings over the first ``alphabet`` lowercase
letters, each of a length drawn uniformly from ``length``, from ``random.Random(seed)``: the
same options give the same pairs on any machine. Options follow the name like a URL query,
separated by ``,`` or ``&`` (quote the spec in a shell)::

    builtin:reverse?length=8-16,size=5000      lengths 8 to 16, 5,000 pairs (the defaults)
    builtin:reverse?length=17-32,seed=1        twice as long: the length-generalisation test set
    builtin:copy?length=4,alphabet=3,size=50   every source 4 letters over "abc"

Characters are not separated by spaces, so ``--tokenizer char`` gives one token per letter.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import json
import random
import string
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.builtin import _module_name, _skipped, cache_dir, python_version, stdlib_root
from lmforge.errors import DataError
from lmforge.fileio import atomic_write_json

PREFIX = "builtin:"
EXTRACTOR_VERSION = 1  # bump when the signature rules change, so old caches are not reused
DEFAULT_LENGTH = (8, 16)
DEFAULT_SIZE = 5000
DEFAULT_ALPHABET = 10
MAX_SIZE = 10_000_000  # a resource guard: the pairs are held in memory while preparing


@dataclass(frozen=True)
class TaskPair:
    source: str
    target: str
    group: str | None  # pairs of one group go to the same split (a module); None: split per pair


_SYNTHETIC: dict[str, tuple[str, Callable[[str], str]]] = {
    "copy": ("copy a random string of letters", lambda text: text),
    "reverse": ("reverse a random string of letters", lambda text: text[::-1]),
    "sort": ("sort the letters of a random string", lambda text: "".join(sorted(text))),
}
TASKS: dict[str, str] = {
    "stdlib-signatures": "a standard-library function's signature -> the first line of its docstring",
    **{name: description for name, (description, _) in _SYNTHETIC.items()},
}


def is_task(spec: str) -> bool:
    """Whether ``spec`` names a built-in seq2seq task (options included)."""
    return spec.startswith(PREFIX) and _split_spec(spec)[0] in TASKS


def _split_spec(spec: str) -> tuple[str, str]:
    name, _, query = spec.removeprefix(PREFIX).partition("?")
    return name, query


def _known() -> str:
    return ", ".join(PREFIX + name for name in TASKS)


def _parse_int(spec: str, key: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"{spec}: {key}={value!r} is not a whole number") from None
    if not low <= number <= high:
        raise DataError(f"{spec}: {key} must be between {low:,} and {high:,}; got {number:,}")
    return number


def parse_task(spec: str) -> tuple[str, dict[str, int]]:
    """``"builtin:reverse?length=8-16,size=100"`` -> ``("reverse", {"min_length": 8, ...})``."""
    name, query = _split_spec(spec)
    if name not in TASKS:
        raise DataError(f"unknown built-in seq2seq task {spec!r}; the tasks are: {_known()}")
    options: dict[str, int] = {}
    if name == "stdlib-signatures":
        if query:
            raise DataError(f"{spec}: builtin:stdlib-signatures takes no options")
        return name, options
    options = {
        "min_length": DEFAULT_LENGTH[0],
        "max_length": DEFAULT_LENGTH[1],
        "size": DEFAULT_SIZE,
        "alphabet": DEFAULT_ALPHABET,
        "seed": 0,
    }
    for item in filter(None, query.replace("&", ",").split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            raise DataError(f"{spec}: option {item!r} is not KEY=VALUE (e.g. length=8-16)")
        if key == "length":
            low, dash, high = value.partition("-")
            options["min_length"] = _parse_int(spec, key, low, 1, 10_000)
            options["max_length"] = _parse_int(spec, key, high, 1, 10_000) if dash else options["min_length"]
            if options["min_length"] > options["max_length"]:
                raise DataError(f"{spec}: length {value} runs backwards; write MIN-MAX, e.g. length=8-16")
        elif key == "size":
            options["size"] = _parse_int(spec, key, value, 1, MAX_SIZE)
        elif key == "alphabet":
            options["alphabet"] = _parse_int(spec, key, value, 1, 26)
        elif key == "seed":
            options["seed"] = _parse_int(spec, key, value, 0, 2**32 - 1)
        else:
            raise DataError(f"{spec}: unknown option {key!r}; the options are length, size, alphabet, seed")
    return name, options


def group_noun(spec: str) -> str:
    """What a group of pairs is in the task ``spec`` (a split holds out whole groups)."""
    return "module" if spec.startswith(PREFIX) and _split_spec(spec)[0] == "stdlib-signatures" else "group"


def describe_task(spec: str) -> str:
    name, options = parse_task(spec)
    if name == "stdlib-signatures":
        return f"{TASKS[name]} ({python_version()})"
    low, high = options["min_length"], options["max_length"]
    lengths = f"length {low}" if low == high else f"lengths {low}-{high}"
    return (
        f"{TASKS[name]}: {options['size']:,} pairs, {lengths}, {options['alphabet']} letters, "
        f"seed {options['seed']}"
    )


def task_pairs(spec: str) -> list[TaskPair]:
    """The pairs of the built-in task ``spec``, in a fixed order."""
    name, options = parse_task(spec)
    if name == "stdlib-signatures":
        return [TaskPair(source, target, module) for module, source, target in stdlib_signatures()]
    return synthetic_pairs(name, **options)


def synthetic_pairs(
    name: str, *, min_length: int, max_length: int, size: int, alphabet: int, seed: int
) -> list[TaskPair]:
    """``size`` distinct random strings and their ``name`` transform (copy, reverse, sort)."""
    letters = string.ascii_lowercase[:alphabet]
    distinct = sum(alphabet**length for length in range(min_length, max_length + 1))
    if size > distinct // 2 + 1:
        raise DataError(
            f"builtin:{name}: {size:,} distinct strings of lengths {min_length}-{max_length} over "
            f"{alphabet} letters are too many ({distinct:,} exist); lower size or raise length or alphabet"
        )
    transform = _SYNTHETIC[name][1]
    rng = random.Random(seed)
    seen: set[str] = set()
    pairs = []
    while len(pairs) < size:  # at most half of the strings are taken, so a draw is new often enough
        text = "".join(rng.choices(letters, k=rng.randint(min_length, max_length)))
        if text not in seen:
            seen.add(text)
            pairs.append(TaskPair(text, transform(text), None))
    return pairs


# --- builtin:stdlib-signatures -------------------------------------------------------------
def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> str:
    args = node.args
    if in_class and not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list):
        positional = args.posonlyargs + args.args
        if positional and positional[0].arg in ("self", "cls"):
            args = copy.copy(args)  # the tree stays as parsed
            if args.posonlyargs:
                args.posonlyargs = args.posonlyargs[1:]
            else:
                args.args = args.args[1:]
            # defaults align with the last positional arguments, so dropping the first keeps them
    return ast.unparse(args)


def first_line(docstring: str) -> str:
    """The docstring's first line: stdlib-signatures' target."""
    return docstring.strip().splitlines()[0].strip() if docstring.strip() else ""


def module_signatures(
    module: str, source: bytes, summary: Callable[[str], str] = first_line
) -> list[tuple[str, str]]:
    """(signature, ``summary(docstring)``) of the module's public functions and methods, in order;
    those whose summary is empty are left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. SyntaxWarning for old escape sequences
        tree = ast.parse(source)
    found: list[tuple[str, str]] = []

    def add(node: ast.AST, prefix: str, in_class: bool) -> None:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            return
        doc = ast.get_docstring(node, clean=True)
        text = summary(doc) if doc else ""
        if text:
            found.append((f"{prefix}.{node.name}({_signature(node, in_class)})", text))

    for node in tree.body:
        add(node, module, in_class=False)
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for member in node.body:
                add(member, f"{module}.{node.name}", in_class=True)
    return found


def extract_stdlib_signatures(
    root: Path | None = None, summary: Callable[[str], str] = first_line
) -> list[tuple[str, str, str]]:
    """(module, signature, ``summary(docstring)``) for the standard library, modules by path."""
    root = root or stdlib_root()
    paths = sorted((p.relative_to(root) for p in root.rglob("*.py")), key=lambda rel: rel.as_posix())
    triples = []
    for relative in paths:
        module = _module_name(relative)
        if _skipped(relative) or any(part.startswith("_") for part in module.split(".")):
            continue
        try:
            pairs = module_signatures(module, (root / relative).read_bytes(), summary)
        except (SyntaxError, ValueError, OSError):
            continue  # a file this Python cannot parse has no signatures for us
        triples.extend((module, signature, line) for signature, line in pairs)
    return triples


_IN_MEMORY: dict[Path, list[tuple[str, str, str]]] = {}


def stdlib_signatures() -> list[tuple[str, str, str]]:
    """``extract_stdlib_signatures()``, cached as JSON per Python version (as stdlib-docs is)."""
    return cached_triples("stdlib-signatures", extract_stdlib_signatures)


def cached_triples(name: str, build: Callable[[], list[tuple[str, str, str]]]) -> list[tuple[str, str, str]]:
    """``build()``'s (module, signature, text) triples, cached as JSON per Python version under ``name``."""
    path = cache_dir() / f"{name}-{python_version().replace(' ', '-')}-v{EXTRACTOR_VERSION}.json"
    if path in _IN_MEMORY:
        return _IN_MEMORY[path]
    triples = None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("python") == python_version() and cached.get("extractor_version") == EXTRACTOR_VERSION:
            triples = [(str(m), str(s), str(t)) for m, s, t in cached["pairs"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or damaged: rebuild
    if triples is None:
        triples = build()
        payload = {"python": python_version(), "extractor_version": EXTRACTOR_VERSION, "pairs": triples}
        with contextlib.suppress(OSError):  # a read-only home directory costs time, not correctness
            atomic_write_json(path, payload)
    if not triples:
        raise DataError(f"builtin:{name} came out empty: this Python has no standard-library sources")
    _IN_MEMORY[path] = triples
    return triples
