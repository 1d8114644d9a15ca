"""``lmforge corpora``: the public corpora ``--data NAME`` downloads, and which are cached here."""

from __future__ import annotations

from lmforge.commands._json import print_json


def corpora(*, as_json: bool = False) -> list[dict]:
    """List the corpora --data accepts by name: size, licence, what each is, and whether it is cached.

    A name is downloaded once, on first use, into $LMFORGE_CACHE (default ~/.cache/lmforge), and
    checked against its sha256 (or, where none is published, against the digest recorded on that
    first download). Any https:// or http:// address works the same way, with an optional
    #sha256=HEX suffix; hf:NAME[:CONFIG][@SPLIT] reads a Hugging Face dataset.

    Args:
        as_json: print {"corpora": [{name, url, sha256, bytes, licence, description, cached, path}]}.

    Examples:
        lmforge corpora
        lmforge prepare --data tinyshakespeare --tokenizer char --out data/shakespeare-char
        lmforge prepare --data 'https://example.org/corpus.txt#sha256=HEX' --tokenizer bpe --out data/web
    """
    from lmforge.data.catalog import CATALOG
    from lmforge.data.download import cached_path, is_cached

    rows = [
        {
            "name": corpus.name,
            "url": corpus.url,
            "sha256": corpus.sha256,
            "bytes": corpus.size,
            "licence": corpus.licence,
            "description": corpus.description,
            "cached": is_cached(corpus.url),
            "path": str(cached_path(corpus.url)),
            "needs": "lmforge[hf]" if corpus.needs_datasets else None,
        }
        for corpus in CATALOG.values()
    ]
    if as_json:
        print_json({"corpora": rows})
        return rows
    name_width = max(len(row["name"]) for row in rows)
    licence_width = max(len(row["licence"]) for row in rows)
    print(f"{'name':<{name_width}}  {'size':>8}  {'cached':<6}  {'licence':<{licence_width}}  description")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f} MB"
        needs = f" (needs {row['needs']})" if row["needs"] else ""
        print(
            f"{row['name']:<{name_width}}  {size:>8}  {'yes' if row['cached'] else 'no':<6}  "
            f"{row['licence']:<{licence_width}}  {row['description']}{needs}"
        )
    print("use: lmforge prepare --data NAME ...  (downloaded once into the cache, sha256 checked)")
    return rows
