"""Public corpora by name: ``--data tinyshakespeare`` is a download with a known digest.

    --data tinyshakespeare  ->  fetch(CATALOG["tinyshakespeare"].url, sha256="86c4e6aa...")
                            ->  ~/.cache/lmforge/downloads/.../input.txt  (1 document, 1,115,394 bytes)

Each entry is a URL, the sha256 of its bytes, its size, its licence and one line on what it is;
``lmforge corpora`` lists them. A digest of ``None`` means no published checksum could be checked
when the entry was written: the digest of the first download is recorded beside the cached file
and every later use is checked against it (trust on first use, see ``download.py``). Addresses
that can move are pinned to a revision where the host offers one.

How a file becomes documents: a text file is one document, unless ``separator`` splits it
(TinyStories puts ``<|endoftext|>`` between stories); a Parquet file is one document per row of
its ``text`` column, unless ``join_rows`` makes the rows (WikiText's lines) one document, as
the raw ``wiki.train.raw`` file is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Corpus:
    name: str
    url: str
    sha256: str | None  # None: recorded on first download, checked on every later use
    size: int  # bytes of the file
    licence: str
    description: str
    separator: str | None = None  # splits a text file into documents
    join_rows: bool = False  # a table's rows are the lines of one document

    @property
    def needs_datasets(self) -> bool:
        """Parquet files are read through the ``datasets`` library (``pip install 'lmforge[hf]'``)."""
        return self.url.endswith(".parquet")


_WIKITEXT = (
    "https://huggingface.co/datasets/Salesforce/wikitext/resolve/b08601e04326c79dfdd32d625aee71d232d685c3"
)
_WIKITEXT_LICENCE = "CC BY-SA 3.0 / GFDL"

CATALOG: dict[str, Corpus] = {
    corpus.name: corpus
    for corpus in (
        Corpus(
            "tinyshakespeare",
            # The file nanoGPT's data/shakespeare_char/prepare.py downloads.
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            1_115_394,
            "public domain",
            "Tiny Shakespeare: 40,000 lines of Shakespeare's plays in one file (Karpathy's char-rnn; nanoGPT)",
        ),
        Corpus(
            "wikitext-2",
            f"{_WIKITEXT}/wikitext-2-raw-v1/train-00000-of-00001.parquet",
            None,  # no published checksum found: recorded on first download
            6_357_543,
            _WIKITEXT_LICENCE,
            "WikiText-2 raw, train split: 2M words of Wikipedia Good and Featured articles (Merity et al. 2016)",
            join_rows=True,
        ),
        Corpus(
            "wikitext-2-valid",
            f"{_WIKITEXT}/wikitext-2-raw-v1/validation-00000-of-00001.parquet",
            "204929b7ff9d6184953f867dedb860e40aa69c078fc1e54b3baaa8fb28511c4c",
            657_209,
            _WIKITEXT_LICENCE,
            "WikiText-2 raw, validation split (217k words)",
            join_rows=True,
        ),
        Corpus(
            "wikitext-2-test",
            f"{_WIKITEXT}/wikitext-2-raw-v1/test-00000-of-00001.parquet",
            "5f1bea067869d04849c0f975a2b29c4ff47d867f484f5010ea5e861eab246d91",
            732_610,
            _WIKITEXT_LICENCE,
            "WikiText-2 raw, test split (245k words)",
            join_rows=True,
        ),
        Corpus(
            "tinystories",
            "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt",
            None,  # no published checksum found: recorded on first download
            22_502_601,
            "CDLA-Sharing-1.0",
            "TinyStories V2, validation file: short stories in simple English written by GPT-4 (Eldan & Li 2023)",
            separator="<|endoftext|>",
        ),
    )
}


def lookup(name: str) -> Corpus | None:
    return CATALOG.get(name)
