"""`phrases`: each sentence asked back for the words that set it apart in the document, made
by rule with no model (see `phrase_pairs`). Where `cloze` asks for names and numbers, this
asks for what prose states in words: a quoted term or a literal of technical text (an option,
a path, a file name), else the sentence's rarest phrase ("Finally, every program is
threatened constantly by what?" / "software patents")."""

from __future__ import annotations

import re
from collections import Counter

from ..generator_styles import QAPair
from ..synthesize import FUNCTION_WORDS
from ..text import QUESTION_WORDS, answer_spans, words
from .cloze import Cloze, echo_pairs, tail_word

RARE = 2  # a word found at most this many times in the document sets its sentence apart
LONGEST = 3  # words of the longest phrase asked for
QUOTED = re.compile(r"[‘'`\"“]([^‘’'`\"“”\n]{2,40}?)[’'\"”]")
# an option (--name, -x, --name=VALUE), a path (/dev/null), a file (.cvsignore, CACHEDIR.TAG)
# or a constant (SIMPLE_BACKUP_SUFFIX)
LITERAL = re.compile(r"(?<![\w:/.-])(--?[A-Za-z][\w-]*(?:=[\w.,/-]+)?|/[\w.-]+(?:/[\w.-]+)*"
                     r"|\.?[A-Za-z][\w-]*\.[A-Za-z]{1,4}(?![\w.])|[A-Z][A-Z0-9]*_[A-Z0-9_]+)")
_WORD = re.compile(r"[A-Za-z][\w'-]*")
_COMMON = QUESTION_WORDS | FUNCTION_WORDS


def phrase_pairs(text: str, window_chars: int, phrasings: int = 1) -> list[QAPair]:
    """Question/answer pairs made from the document by rule: each sentence asked back, its
    answer turned into a question word as `cloze` does, for its first quoted term, else its
    first literal, else its rarest phrase (up to LONGEST lower-case words around a word found
    at most RARE times in the document); never for what `cloze` asks of it or its subject,
    and for one span per sentence at most, asked `phrasings` ways as `cloze` asks
    (`echo_questions`)."""
    counts = Counter(words(text))

    def asks(sentence: str, preceding: str) -> list[str]:
        span = _ask(sentence, counts)
        taken = {a.lower() for a in (*answer_spans(sentence, preceding), tail_word(sentence))
                 if a}
        return [] if span is None or span.lower() in taken else [span]

    return echo_pairs(text, window_chars, asks, phrasings)


def _ask(sentence: str, counts: Counter) -> str | None:
    """What `sentence` is asked for (see `phrase_pairs`), or None."""
    for pattern in (QUOTED, LITERAL):
        for m in pattern.finditer(sentence):
            span = m.group(1).strip()
            if len(span) >= 2 and span.lower() not in ("e.g", "i.e", "etc") \
                    and len(span) < len(sentence) // 2:
                return span
    return _rare_phrase(sentence, counts)


def _rare_phrase(sentence: str, counts: Counter) -> str | None:
    """The run of at most LONGEST lower-case words, separated by single spaces, around the
    sentence's rarest word in the document (the last of equals: a sentence usually ends with
    what it tells), where that word is found at most RARE times; None where none is."""
    found = list(_WORD.finditer(sentence))
    inside = [(m.start(), m.end()) for m in re.finditer(r"\S+", sentence)
              if "/" in m.group() or "@" in m.group()]  # an address, a path: no phrase

    def plain(i: int) -> bool:
        w = found[i].group()
        return (w.islower() and len(w) > 2 and w not in _COMMON
                and not any(a <= found[i].start() < b for a, b in inside))

    rare = [i for i in range(len(found)) if plain(i) and counts[found[i].group()] <= RARE]
    if not rare:
        return None
    at = min(rare, key=lambda i: (counts[found[i].group()], -i))
    lo = hi = at
    while hi - lo + 1 < LONGEST:
        if hi + 1 < len(found) and plain(hi + 1) and _joined(sentence, found, hi):
            hi += 1
        elif lo > 0 and plain(lo - 1) and _joined(sentence, found, lo - 1):
            lo -= 1
        else:
            break
    return sentence[found[lo].start():found[hi].end()]


def _joined(sentence: str, found: list, i: int) -> bool:
    """Whether words i and i + 1 are separated by one space alone."""
    return sentence[found[i].end():found[i + 1].start()] == " "


class Phrases(Cloze):
    name = "phrases"
    help = ("each sentence asked back with a quoted term, a literal (option, path, file) or "
            "its rarest phrase as the answer: made by rule, no generation")
    order = 3
    pairs = staticmethod(phrase_pairs)


TASK = Phrases()
