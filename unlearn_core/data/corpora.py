"""Text corpora: the named corpora and how a text file becomes documents.

Where a corpus file is found (the data folder, or the hub) is :mod:`.loaders`' job
(``load_corpus``); this module turns text into documents, the same way for a shipped corpus, a
user's file and an upload in the app.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# name -> (local relative path, hub dataset args)
CORPORA: dict[str, tuple[str, tuple]] = {
    "webtext": ("text/webtext.test.jsonl", ("Skylion007/openwebtext", None, "train")),
    "webtext-train": ("text/webtext.valid.jsonl", ("Skylion007/openwebtext", None, "train")),
    "pile": ("text/pile.test.jsonl", ("monology/pile-uncopyrighted", None, "train")),
    "pile-train": ("text/pile.valid.jsonl", ("monology/pile-uncopyrighted", None, "train")),
    "wikitext": ("text/wikitext-2-raw.test.txt", ("Salesforce/wikitext", "wikitext-2-raw-v1", "test")),
    "sherlock": ("books/sherlock_holmes_pg1661.txt", ()),
    # the gated WMDP bio forget corpus, for users who have it ({"text"} per line); a path can also
    # be given in UNLEARN_WMDP_FORGET_CORPUS
    "wmdp-bio-forget": ("wmdp/bio-forget-corpus.jsonl", ()),
}
CORPUS_HELP = {
    "webtext": "OpenWebText stand-in (WebText excerpts, held-out split)",
    "wikitext": "WikiText-2 raw test",
    "sherlock": "The Adventures of Sherlock Holmes (public domain)",
    "wmdp-bio-text": "WMDP-bio question text (stand-in for the gated bio forget corpus)",
    "wmdp-bio-forget": "the gated WMDP bio forget corpus (only where the user has it)",
    "quiz:<name>": "a quiz as text: 'Question: ...\\nAnswer: <right answer>' per question",
}


def read_jsonl_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]


def read_plain_text(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")


def strip_gutenberg(text: str) -> str:
    start = text.find("*** START OF")
    if start != -1:
        text = text[text.find("\n", start) + 1 :]
    end = text.find("*** END OF")
    if end != -1:
        text = text[:end]
    return text.strip()


def split_paragraph_docs(text: str, min_chars: int = 200) -> list[str]:
    """Group blank-line separated paragraphs into documents of at least ``min_chars``."""
    docs, cur = [], ""
    paras, sep = re.split(r"\n[ \t]*\n", text), "\n\n"
    if len(paras) < 2:  # one paragraph per line (WikiText raw): group lines instead
        paras, sep, min_chars = text.split("\n"), "\n", max(min_chars, 1000)
    for para in paras:
        if not para.strip():
            continue
        cur = f"{cur}{sep}{para}" if cur else para
        if len(cur) >= min_chars:
            docs.append(cur.strip())
            cur = ""
    if cur.strip():
        docs.append(cur.strip())
    return docs


def docs_from_file(path: Path) -> list[str]:
    """A corpus file's documents: a .jsonl file's non-empty ``"text"`` fields, else plain text
    (a Project Gutenberg header and footer dropped) grouped into paragraph documents."""
    if path.suffix == ".jsonl":
        return [t for t in read_jsonl_texts(path) if t.strip()]
    text = read_plain_text(path)
    if "*** START OF" in text:
        text = strip_gutenberg(text)
    return split_paragraph_docs(text)


def hub_documents(name: str, hub: tuple) -> list[str]:
    """The first 5,000 rows' non-empty text of a corpus streamed from the hub (``hub`` is its
    ``CORPORA`` entry's dataset args); WikiText's lines are grouped into paragraph documents.
    Raises whatever ``datasets`` raises when the hub cannot serve it."""
    from datasets import load_dataset

    repo, cfg, split = hub
    ds = load_dataset(repo, cfg, split=split, streaming=True)
    texts = []
    for i, r in enumerate(ds):
        if r["text"].strip():
            texts.append(r["text"])
        if i >= 5000:
            break
    if name == "wikitext":
        return split_paragraph_docs("".join(texts))
    return texts
