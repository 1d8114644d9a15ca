"""Special tokens: each family's defaults, overrides, and the named ids other modules rely on."""

from __future__ import annotations

import pytest

from lmforge.errors import UserInputError
from lmforge.tokenizers import DEFAULT_SPECIAL_TOKENS, KINDS, train_tokenizer

from .conftest import CORPUS, trained

EOT = "<|endoftext|>"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("char", {"bos": EOT, "eos": EOT, "unk": "<unk>"}),
        ("word", {"pad": "<pad>", "unk": "<unk>", "bos": EOT, "eos": EOT}),
        ("bpe", {"bos": EOT, "eos": EOT}),
        ("wordpiece", {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}),
        ("unigram", {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}),
    ],
)
def test_family_defaults_take_the_first_ids(kind, expected):
    tok = trained(kind)
    assert tok.special_tokens == expected == DEFAULT_SPECIAL_TOKENS[kind]
    distinct = list(dict.fromkeys(expected.values()))
    assert tok.tokens(range(len(distinct))) == distinct
    for name, token in expected.items():
        assert getattr(tok, f"{name}_id") == tok.token_to_id(token) == distinct.index(token)
    for name in {"pad", "bos", "eos", "unk", "mask", "cls", "sep"} - set(expected):
        assert getattr(tok, f"{name}_id") is None


def test_named_ids_of_bert_and_gpt_families():
    wordpiece, bpe = trained("wordpiece"), trained("bpe")
    ids = (wordpiece.pad_id, wordpiece.unk_id, wordpiece.cls_id, wordpiece.sep_id, wordpiece.mask_id)
    assert ids == (0, 1, 2, 3, 4)
    assert wordpiece.document_separator_id == wordpiece.sep_id == 3
    assert bpe.bos_id == bpe.eos_id == bpe.document_separator_id == 0


@pytest.mark.parametrize("kind", KINDS)
def test_special_token_in_text_is_one_id_and_decodes_back(kind):
    tok = trained(kind)
    separator = tok.special_tokens.get("eos") or tok.special_tokens["sep"]
    ids = tok.encode(f"lecture{separator}lecture")
    assert tok.document_separator_id in ids
    assert separator in tok.decode(ids)
    assert separator not in tok.decode(ids, skip_special_tokens=True)


def test_override_replaces_adds_and_drops():
    tok = train_tokenizer("bpe", CORPUS, 300, special_tokens={"eos": "</s>", "pad": "<pad>", "bos": ""})
    assert tok.special_tokens == {"eos": "</s>", "pad": "<pad>"}
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (0, 1, None)
    assert tok.token_to_id(EOT) is None
    assert tok.encode("a</s>") == [tok.token_to_id("a"), tok.eos_id]


def test_override_is_kept_after_save_and_load(tmp_path):
    from lmforge.tokenizers import load_tokenizer

    tok = train_tokenizer("wordpiece", CORPUS, 300, special_tokens={"mask": "<mask>"})
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.special_tokens["mask"] == "<mask>" and loaded.mask_id == tok.mask_id == 4


def test_unknown_special_name_is_refused():
    with pytest.raises(
        UserInputError, match="unknown special-token name 'start'; the names are pad, bos, eos"
    ):
        train_tokenizer("bpe", CORPUS, 300, special_tokens={"start": "<s>"})


def test_dropping_unk_where_it_is_needed_is_refused():
    with pytest.raises(UserInputError, match="needs an unk special token"):
        train_tokenizer("word", CORPUS, special_tokens={"unk": ""})
    # With byte fallback a character tokenizer never needs <unk>.
    tok = train_tokenizer("char", CORPUS, special_tokens={"unk": ""}, byte_fallback=True)
    assert tok.unk_id is None and tok.decode(tok.encode("✓")) == "✓"


def test_document_start_is_the_separator_else_bos():
    wordpiece, bpe = trained("wordpiece"), trained("bpe")
    assert bpe.document_start_id == bpe.eos_id == 0  # GPT-style: documents follow <|endoftext|>
    assert wordpiece.document_start_id == wordpiece.sep_id == 3  # BERT-style: no eos, so [SEP]
    no_eos = train_tokenizer("char", CORPUS, special_tokens={"eos": "", "bos": "<s>"})
    assert no_eos.document_separator_id is None and no_eos.document_start_id == no_eos.token_to_id("<s>")
    neither = train_tokenizer("char", CORPUS, special_tokens={"eos": "", "bos": ""})
    assert neither.document_start_id is None


def test_parse_special_splits_name_and_token():
    from lmforge.tokenizers import parse_special

    assert parse_special(["eos=</s>", " bos=", "pad=a=b"]) == {"eos": "</s>", "bos": "", "pad": "a=b"}
    for bad in ("eos", "=</s>"):
        with pytest.raises(UserInputError, match="--special expects NAME=TOKEN"):
            parse_special([bad])


def test_what_a_special_token_does_to_text_that_holds_it():
    # the reason for the two refusals below: a special token is cut out of any text before the
    # model sees it, so text that holds its string loses that string
    tok = train_tokenizer("bpe", CORPUS, 300, special_tokens={"eos": "</s>"})
    assert tok.decode(tok.encode("a</s>b"), skip_special_tokens=True) == "ab"


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "wordpiece", "unigram"])
def test_a_one_character_special_token_is_refused(kind):
    with pytest.raises(UserInputError) as error:
        train_tokenizer(
            kind,
            CORPUS,
            300 if kind in ("bpe", "wordpiece", "unigram") else None,
            special_tokens={"eos": "a"},
        )
    assert str(error.value) == (
        "--special eos='a' is a single character: a special token is cut out of every text, so each "
        "'a' would become eos; use a string no text holds, such as --special eos=<|eos|>"
    )


def test_a_special_token_the_text_holds_is_refused_with_its_count():
    text = "Henry gives a lecture. The lecture is long.\n" * 3
    with pytest.raises(UserInputError) as error:
        train_tokenizer("word", [text], special_tokens={"sep": "lecture"})
    assert str(error.value) == (
        "--special sep='lecture' occurs 6 times in the training text, and a special token is cut out of "
        "every text, so each one would become sep; use a string the text does not hold, such as "
        "--special sep=<|sep|>"
    )
    with pytest.raises(UserInputError, match="occurs 1 time in"):
        train_tokenizer("bpe", ["plain text", "then <eos> once"], 300, special_tokens={"eos": "<eos>"})


def test_a_default_token_may_occur_in_the_text():
    # GPT-2-style corpora hold <|endoftext|> between documents on purpose: the default (given
    # explicitly or not) is not refused
    text = f"one document{EOT}another one"
    for overrides in (None, {"eos": EOT}):
        tok = train_tokenizer("bpe", [text], 300, special_tokens=overrides)
        assert tok.eos_id in tok.encode(text)


def test_decoding_counts_the_vocabulary_once_not_per_call():
    """``get_vocab_size(with_added_tokens=True)`` builds the whole vocabulary each call (1.2 ms for
    GPT-2's): counted when the tokenizer is made, never again per decode, and an id past the end
    is still refused in one line."""
    from lmforge.errors import TokenizerError
    from lmforge.tokenizers.hf import HFTokenizer

    original = trained("bpe")
    counted = []

    class CountingBackend:
        def __getattr__(self, name):
            return getattr(original.backend, name)

        def get_vocab_size(self, with_added_tokens=True):
            counted.append(with_added_tokens)
            return original.backend.get_vocab_size(with_added_tokens=with_added_tokens)

    tok = HFTokenizer(CountingBackend(), original.special_tokens)
    ids = tok.encode(CORPUS[0])
    assert [tok.decode(ids[: n + 1]) for n in range(len(ids))][-1] == original.decode(ids)
    assert counted == [True] and tok.vocab_size == original.vocab_size
    with pytest.raises(TokenizerError, match="outside this"):
        tok.decode([tok.vocab_size])
