"""`cloze`: each sentence of the document asked back with one of its names or numbers as the
answer, made by rule with no model (see `cloze_pairs`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from ..generator_styles import QAPair
from ..samples import Sample
from ..synthesize import FUNCTION_WORDS, question_key, task_windows
from ..text import subject_and_asks, whole_words
from .base import Task, TaskInput


def cloze_pairs(text: str, window_chars: int) -> list[QAPair]:
    """Question/answer pairs made from the document by rule, with no model: each sentence
    asked back with one of its numbers or names (not its subject) turned into a question
    word ("The Reidrys is captained by Thulath Shethoke." -> "The Reidrys is captained by
    what?" / "Thulath Shethoke"), so the adapter learns a fact as a question about its
    subject, in the sentence's own words; a sentence about a named subject is also asked for
    the common word it ends on ("Orla Vell works as a tanner." -> "tanner"), where values
    such as trades and goods sit."""
    return echo_pairs(text, window_chars, cloze_asks)


def cloze_asks(sentence: str, preceding: str) -> list[str]:
    """What `cloze_pairs` asks `sentence` for (`preceding`: the text before it)."""
    subject, asks = subject_and_asks(sentence, preceding)
    if subject is not None and (tail := tail_word(sentence)):
        asks = [*asks, tail]  # never one of the spans: those end on a capital or a digit
    return [span for span in asks if span is not None]


def echo_pairs(text: str, window_chars: int,
               asks_of: Callable[[str, str], list[str]]) -> list[QAPair]:
    """Each sentence of `text` asked back (`echo_question`) for each span that
    `asks_of(sentence, preceding text)` gives, each question once."""
    pairs, seen = [], set()
    for window in task_windows(text, 1, window_chars):
        sentence = " ".join(window.target.split())
        for span in asks_of(sentence, window.preceding):
            question = echo_question(sentence, span)
            if question and (key := question_key(question)) not in seen:
                seen.add(key)
                pairs.append(QAPair(question, span))
    return pairs


_YEAR = re.compile(r"1\d{3}|20\d{2}")
_TAIL = re.compile(r"(\S+)\s+([a-z][a-z-]{2,})[.!]$")
_COUNTS = frozenset("""one two three four five six seven eight nine ten eleven twelve twenty
thirty forty fifty hundred hundreds thousand thousands million few several many""".split())


def tail_word(sentence: str) -> str | None:
    """The lower-case word `sentence` ends on, unless it is a function word or counted by
    the word before it ("510 tons", "twenty-six years": the number is what is told)."""
    m = _TAIL.search(sentence)
    if m is None or m.group(2) in FUNCTION_WORDS:
        return None
    before = m.group(1).lower().split("-")  # "twenty-six": either end may count
    if any(c.isdigit() for c in m.group(1)) or {before[0], before[-1]} & _COUNTS:
        return None
    return m.group(2)


def echo_question(sentence: str, span: str) -> str | None:
    """`sentence` as a question for `span`: the span's first occurrence becomes "what year",
    "how many" (a number counting the word after it), "who" (a name opening the sentence)
    or "what"."""
    at = re.search(whole_words(span), sentence)
    if at is None:
        return None
    after = sentence[at.end():]
    if _YEAR.fullmatch(span):
        word = "what year"
    elif span[0].isdigit():
        word = "how many" if re.match(r"\s+[a-z]", after) else "what"
    else:
        word = "who" if at.start() == 0 else "what"
    if at.start() == 0:
        word = word.capitalize()
    return (sentence[:at.start()] + word + after).rstrip(" .!;:") + "?"


class Cloze(Task):
    name = "cloze"
    help = ("each sentence asked back with a name or number of it as the answer: made by rule, "
            "no generation")
    order = 2
    pairs = staticmethod(cloze_pairs)  # (text, window_chars) -> its question/answer pairs

    def samples(self, given: TaskInput) -> list[Sample]:
        return given.qa(self.pairs(given.doc.text, given.settings.synth.window_chars))


TASK = Cloze()
