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


def cloze_pairs(text: str, window_chars: int, phrasings: int = 1) -> list[QAPair]:
    """Question/answer pairs made from the document by rule, with no model: each sentence
    asked back with one of its numbers or names (not its subject) turned into a question
    word ("The Reidrys is captained by Thulath Shethoke." -> "The Reidrys is captained by
    what?" / "Thulath Shethoke"), so the adapter learns a fact as a question about its
    subject, in the sentence's own words; a sentence about a named subject is also asked for
    the common word it ends on ("Orla Vell works as a tanner." -> "tanner"), where values
    such as trades and goods sit. `phrasings` > 1 asks each also in other words
    (`echo_questions`)."""
    return echo_pairs(text, window_chars, cloze_asks, phrasings)


def cloze_asks(sentence: str, preceding: str) -> list[str]:
    """What `cloze_pairs` asks `sentence` for (`preceding`: the text before it)."""
    subject, asks = subject_and_asks(sentence, preceding)
    if subject is not None and (tail := tail_word(sentence)):
        asks = [*asks, tail]  # never one of the spans: those end on a capital or a digit
    return [span for span in asks if span is not None]


def echo_pairs(text: str, window_chars: int, asks_of: Callable[[str, str], list[str]],
               phrasings: int = 1) -> list[QAPair]:
    """Each sentence of `text` asked back (`echo_questions`, up to `phrasings` ways) for each
    span that `asks_of(sentence, preceding text)` gives, each question once."""
    pairs, seen = [], set()
    for window in task_windows(text, 1, window_chars):
        sentence = " ".join(window.target.split())
        for span in asks_of(sentence, window.preceding):
            for question in echo_questions(sentence, span, phrasings):
                if (key := question_key(question)) not in seen:
                    seen.add(key)
                    pairs.append(QAPair(question, span))
    return pairs


def echo_questions(sentence: str, span: str, phrasings: int) -> list[str]:
    """Up to `phrasings` questions for `span` of `sentence`: the sentence asked back
    (`echo_question`), then the question word put first (`fronted_question`), then the
    sentence with a blank ("Fill in the blank: The Reidrys is captained by ___."); those that
    apply, in that order."""
    made = [echo_question(sentence, span)]
    if phrasings > 1 and made[0] is not None:
        made += [fronted_question(sentence, span), blank_question(sentence, span)]
    return [q for q in made if q is not None][:phrasings]


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
    asked = _asked_for(sentence, span)
    if asked is None:
        return None
    word, before, after = asked
    return (before + (word if before else word.capitalize()) + after).rstrip(" .!;:") + "?"


# a verb that moves before the subject in a question ("What is the Reidrys captained by?")
_AUXILIARIES = frozenset("is was are were can could will would may might must shall should"
                         .split())
# words that open a subject without being part of a name
_LEADS = frozenset("the a an this that these those its his her their each every".split())
_SUBJECT = 5  # most words of a subject a question is turned around
_PRESENT = re.compile(r"[a-z]{2,}[^su]s")  # "works", "sails", "lies": not "was", "this", "less"


def _asked_for(sentence: str, span: str) -> tuple[str, str, str] | None:
    """(question word, text before the span, text after it) of `echo_question`'s rule."""
    at = re.search(whole_words(span), sentence)
    if at is None:
        return None
    before, after = sentence[:at.start()], sentence[at.end():]
    if _YEAR.fullmatch(span):
        return "what year", before, after
    if span[0].isdigit():
        return ("how many" if re.match(r"\s+[a-z]", after) else "what"), before, after
    return ("who" if at.start() == 0 else "what"), before, after


def fronted_question(sentence: str, span: str) -> str | None:
    """`sentence` as a question for `span` with the question word first, as people ask: an
    auxiliary after a short subject goes before it ("The Reidrys is captained by Thulath
    Shethoke." -> "What is the Reidrys captained by?"), a verb in -s after a name takes "does"
    ("Orla Vell works as a tanner." -> "What does Orla Vell work as?"); "how many" takes the
    word it counts along. None where the sentence opens with the span or its subject is not
    short and plain (a clause, a list, punctuation)."""
    asked = _asked_for(sentence, span)
    if asked is None or not asked[1].strip():
        return None
    word, before, after = asked
    if word == "how many":
        counted = re.match(r"\s+([a-z][a-z-]*)", after)
        word, after = f"how many {counted.group(1)}", after[counted.end():]
    words = before.split()
    if not all(re.fullmatch(r"[\w'-]+", w) for w in words):
        return None
    if words[-1].lower() in ("a", "an", "the"):  # "works as a what" -> "work as"
        words = words[:-1]
    turned = _turned(words) if words else None
    if turned is None:
        return None
    return (f"{word.capitalize()} {turned}{after}").rstrip(" .!;:") + "?"


def _turned(words: list[str]) -> str | None:
    """The words before the span with their auxiliary before the subject ("the Reidrys is
    captained by" -> "is the Reidrys captained by"), or "does" and the verb's plain form."""
    for i, w in enumerate(words[:_SUBJECT + 1]):
        if i > 0 and w in _AUXILIARIES:
            return " ".join([w, *_subject(words[:i]), *words[i + 1:]])
    lead = 1 if words[0].lower() in _LEADS else 0
    names = lead
    while names < len(words) and words[names][:1].isupper():
        names += 1
    if not lead < names <= _SUBJECT or names >= len(words):  # [The] Name..., then a verb
        return None
    verb = words[names]
    if verb in FUNCTION_WORDS or not _PRESENT.fullmatch(verb):
        return None
    if verb.endswith("ies") and len(verb) > 4:  # "carries" -> "carry" (but "lies" -> "lie")
        plain = verb[:-3] + "y"
    elif re.search(r"(sh|ch|x|z|ss|o)es$", verb):  # "reaches" -> "reach", "goes" -> "go"
        plain = verb[:-2]
    else:
        plain = verb[:-1]
    return " ".join(["does", *_subject(words[:names]), plain, *words[names + 1:]])


def _subject(words: list[str]) -> list[str]:
    """A subject as it reads after the auxiliary: "The Reidrys" -> "the Reidrys"."""
    if words[0].lower() in _LEADS:
        return [words[0].lower(), *words[1:]]
    return words


def blank_question(sentence: str, span: str) -> str | None:
    """`sentence` with its span's first occurrence as a blank to fill."""
    asked = _asked_for(sentence, span)
    if asked is None:
        return None
    _, before, after = asked
    return f"Fill in the blank: {before}___{after}"


class Cloze(Task):
    name = "cloze"
    help = ("each sentence asked back with a name or number of it as the answer: made by rule, "
            "no generation")
    order = 2
    # (text, window_chars, phrasings) -> its question/answer pairs
    pairs = staticmethod(cloze_pairs)

    def samples(self, given: TaskInput) -> list[Sample]:
        synth = given.settings.synth
        return given.qa(self.pairs(given.doc.text, synth.window_chars, synth.cloze_phrasings))


TASK = Cloze()
