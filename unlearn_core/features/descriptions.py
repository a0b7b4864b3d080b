"""Automatic feature descriptions read off the max-activating contexts: the words a feature peaks
on (word pieces joined into the whole word), the two-word phrases there, and the common words
around the peaks. A person recognises a topic from these; a logit-lens list read off an early
layer is mostly noise, so it is added only where the caller says it means something.

Pure functions on the examples ``features.top_examples`` renders: no model, no cache."""

from __future__ import annotations

import re
from collections import Counter

STOPWORDS = frozenset(
    """
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves also one two may might must shall said upon
into like well much many even though however among within without via per etc let get got
""".split()
)
WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")


def _starts_word(tok: str) -> bool:
    return not tok or tok[0] in " \n\t▁" or not tok[0].isalnum()


def peak_word(tokens: list[str], peak: int) -> str:
    """The whole word the peak token belongs to (word pieces joined: 'anth' + 'rax' = 'anthrax')."""
    lo = peak
    while lo > 0 and not _starts_word(tokens[lo]) and tokens[lo - 1].strip():
        lo -= 1
    hi = peak + 1
    while hi < len(tokens) and not _starts_word(tokens[hi]):
        hi += 1
    return "".join(tokens[lo:hi]).strip()


def _words(tokens: list[str]) -> list[str]:
    return [w.lower() for w in WORD.findall("".join(tokens))]


def describe_examples(examples: list[dict], window: int = 8, logit_tokens: list[str] | None = None) -> dict:
    """``{"fires_on", "phrases", "context", "logit_lens", "text"}`` from top examples (``tokens``,
    ``peak``): the peak words by count, the phrases ending there, the words within ``window``
    tokens of the peaks (stopwords and the peak words left out), seen in at least two examples."""
    peaks, phrases, around = Counter(), Counter(), Counter()
    for e in examples:
        toks, p = e["tokens"], e["peak"]
        w = peak_word(toks, p)
        if not w:
            continue
        peaks[w] += 1
        before = _words(toks[max(0, p - 3) : p])
        if before and before[-1] not in STOPWORDS:
            phrases[f"{before[-1]} {w.lower()}"] += 1
        seen = set(_words(toks[max(0, p - window) : p + window + 1]))
        around.update(seen)
    peak_lower = {w.lower() for w in peaks}
    context = [w for w, n in around.most_common() if n >= 2 and w not in STOPWORDS and w not in peak_lower][:6]
    fires_on = [w for w, _ in peaks.most_common(5)]
    common_phrases = [p for p, n in phrases.most_common(3) if n >= 2]
    parts = []
    if fires_on:
        parts.append("fires on " + ", ".join(repr(w) for w in fires_on))
    if common_phrases:
        parts.append("in " + ", ".join(repr(p) for p in common_phrases))
    if context:
        parts.append("around: " + ", ".join(context))
    lens = [t.strip() for t in (logit_tokens or []) if t.strip()][:5]
    if lens:
        parts.append("logit lens: promotes " + ", ".join(repr(t) for t in lens))
    text = "[automatic] " + ("; ".join(parts) if parts else "no activations found")
    return {"fires_on": fires_on, "phrases": common_phrases, "context": context, "logit_lens": lens, "text": text}


def matches_query(query: str, description: str) -> bool:
    """Whether every word of an explanation-search query is in a description, allowing a different
    ending: a word of 6+ letters matches by its stem (all but its last two letters, at least 5), so
    "anthrax" finds a feature described by 'anthracis' and "bacteria" one by 'bacterium'. Why:
    automatic descriptions quote the tokens a feature fires on, which are word pieces and
    inflections, not the word a person types."""
    text = description.lower()
    for w in query.lower().split():
        stem = w[: max(5, len(w) - 2)] if len(w) >= 6 else w
        if stem not in text:
            return False
    return True
