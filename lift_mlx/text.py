"""Text heuristics that generation, cloze and routing share: the words of a text, the ones that
say what it is about, the short spans (numbers, names) a question about a sentence could have
as its answer, and which of them the sentence is about. Pure functions, no model."""

from __future__ import annotations

import re

# Words a question is made of whatever it asks about; the rest are what it is about.
QUESTION_WORDS = frozenset("""
a an the in on at of to by for from with and or is was are were be been it its this that these
those what which when where who whom whose why how many much does did do has have had can could
would should will shall may might there their they them he she his her him i you your we our
me my name called tell give please about than then so if not no any some one all""".split())
WORD = re.compile(r"[\w'-]+")  # a word: letters, digits, hyphens, apostrophes


def words(text: str) -> list[str]:
    """`text`'s words, lower-cased (hyphens and apostrophes kept inside them)."""
    return [t.lower() for t in WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """`text`'s words that say what it is about: lower-cased, without question words and
    words of one or two letters."""
    return [w for w in words(text) if w not in QUESTION_WORDS and len(w) > 2]


def whole_words(span: str) -> str:
    """A pattern that finds `span` as whole words (not inside a longer word)."""
    return rf"(?<!\w){re.escape(span)}(?!\w)"


def has_words(text: str, span: str) -> bool:
    """Whether `span` occurs in `text` as whole words."""
    return re.search(whole_words(span), text) is not None


# A span that a question can ask for: a number (with the word after it, "240 metres"), or a run
# of capitalised words (a name; one word alone not where it may only start the sentence).
NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")
NAME = re.compile(r"\b[A-Z][\w'-]*(?:\s+(?:of|the|de|van|von)?\s*[A-Z][\w'-]*)*")
NOT_NAMES = frozenset(
    "A An The In On At Of To By For From With And Or But Its It This That These Those He She "
    "They We I His Her Their Our Yes No".split())


def answer_spans(target: str, preceding: str = "") -> list[str]:
    """Short answers a question about `target` could have: its numbers and its names, each
    once, the last first (an English sentence usually ends with what it tells: "X was born in
    1826" is asked as "When was X born?" before "Who was born in 1826?"). One capitalised
    word that opens a sentence counts as a name only where `preceding` or `target` has it
    capitalised inside a sentence too ("... sail from Toureinwick.", not "Visitors", nor
    "Little is written about ..." however often it is said)."""
    found: list[tuple[int, str]] = []
    for m in NUMBER.finditer(target):
        found.append((m.start(), m.group()))
    sentence_starts = {0} | {m.end() for m in re.finditer(r"[.!?]\s+", target)}
    context = f"{preceding} {target}"
    for m in NAME.finditer(target):
        words = m.group().split()
        while words and words[0] in NOT_NAMES:  # "The Orla" -> "Orla"
            words = words[1:]
        if not words:
            continue
        name = " ".join(words)
        start = m.start() + m.group().index(words[0])
        if len(words) == 1 and start in sentence_starts and not _recurs_as_name(name, context):
            continue  # one capitalised word opening a sentence: as likely a common word
        found.append((start, name))
    seen, out = set(), []
    for _, span in sorted(found, reverse=True):
        if span not in seen and not any(span in other and span != other for _, other in found):
            seen.add(span)
            out.append(span)
    return out


def _recurs_as_name(word: str, context: str) -> bool:
    """Whether `word` occurs capitalised where no sentence starts."""
    return re.search(rf"(?<=[^.!?\s])\s+{re.escape(word)}(?!\w)", context) is not None


PARAGRAPH_BREAK = "\n\n"


def subject_and_asks(target: str, preceding: str = "") -> tuple[str | None, list[str | None]]:
    """What a sentence is about and what its questions ask for: the subject is the name (of
    `answer_spans`) that its paragraph so far repeats most, the first in the sentence on a tie
    ("The Reidrys is captained by Thulath Shethoke" in a paragraph about the Reidrys); the
    asks are each other span, last first, then None (the model picks the answer); request k
    about the sentence makes ask k (mod their number), with the examples in another order, so
    a fact can be asked in more than one phrasing. A sentence without a name asks for its
    numbers without a subject; one with no span asks nothing (in a knowledge-world document:
    the filler)."""
    spans = answer_spans(target, preceding)
    names = [span for span in spans if not NUMBER.fullmatch(span)]
    if not names:
        return None, spans
    context = f"{preceding.rsplit(PARAGRAPH_BREAK, 1)[-1]} {target}"
    subject = max(names, key=lambda n: (len(re.findall(whole_words(n), context)),
                                        -target.index(n)))
    return subject, [span for span in spans if span != subject] + [None]
