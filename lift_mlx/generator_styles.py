"""How the generator is asked for question/answer pairs: a prompt, a parser and a stop rule
that belong together, one `GeneratorStyle` each, picked by name.

- `json`: chat instructions asking for `{"qa_list": [...]}` (instruct models of ~1.5B and up
  follow them).
- `lines`: a plain completion prompt of worked examples in a `Sentence:/Question:/Answer:`
  line format, ending where the model is to write the next question. Small models follow a
  pattern far better than instructions: SmolLM2-135M asked for JSON copies the target sentence
  back (0 usable pairs of 33 requests), while a few examples get it to write grounded pairs.

A style's `version` keys the QA pairs it writes (their cache) and the adapters trained on
them: give it a new one whenever its prompt, parser or stop rule changes what it writes
(tests/test_synthesize.py holds each style's wording to its version, so an edited wording
with the old version fails there). Adding a style: write a `GeneratorStyle` and add it to
`STYLES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from . import prompts
from .errors import LiftError
from .text import (
    NAME,
    NOT_NAMES,
    NUMBER,
    QUESTION_WORDS,
    answer_spans,
    content_words,
    has_words,
    subject_and_asks,
    whole_words,
)


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass(frozen=True)
class GeneratorStyle:
    name: str
    wording: tuple[str, ...]  # every text the prompt is made of
    prompt: Callable  # (tokenizer, preceding, target, n, variant) -> token ids
    # (the generator's output, the request's preceding text, target text, variant) -> pairs
    parse: Callable[[str, str, str, int], list[QAPair]]
    stop: Callable[[], Callable[[str], bool]]  # a fresh watcher per request: piece -> done?
    # (preceding, target, n wanted pairs) -> requests made about the window
    requests: Callable[[str, str, int], int]
    # Keys its cached pairs and the adapters trained on them: new pairs, new version. (The
    # versions of the first styles are the hashes of their code that keyed them before.)
    version: str


# --- json ------------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_PAIR = re.compile(
    r'"question"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"answer"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL
)


def parse_qa(output: str, preceding: str = "", target: str = "",
             variant: int = 0) -> list[QAPair]:
    """QA pairs from JSON output: tolerant of code fences, text around the JSON, a bare list,
    and output cut off mid-JSON (complete pairs are still recovered)."""
    text = _FENCE.sub("", output)
    decoder = json.JSONDecoder()
    for start in [m.start() for m in re.finditer(r"[\[{]", text)]:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        items = obj.get("qa_list", obj.get("qa_pairs")) if isinstance(obj, dict) else obj
        if isinstance(items, list):
            pairs = [
                QAPair(str(it.get("question", "")), str(it.get("answer", "")))
                for it in items
                if isinstance(it, dict)
            ]
            if pairs:
                return pairs
    # Truncated or otherwise broken JSON: take every complete question/answer pair.
    pairs = []
    for q, a in _PAIR.findall(text):
        try:
            pairs.append(QAPair(json.loads(f'"{q}"'), json.loads(f'"{a}"')))
        except json.JSONDecodeError:
            continue
    return pairs


class JsonEnd:
    """Watches a generator's output and tells when its first JSON object (or list) is closed,
    so a request stops there instead of running to its token budget."""

    def __init__(self):
        self.depth = 0
        self.started = False
        self.in_string = False
        self.escaped = False

    def feed(self, text: str) -> bool:
        """Consume the next piece of output; True once the JSON value is complete."""
        for ch in text:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = self.started
            elif ch in "{[":
                self.depth += 1
                self.started = True
            elif ch in "}]" and self.started:
                self.depth -= 1
                if self.depth == 0:
                    return True
        return False


def _json_prompt(tokenizer, preceding: str, target: str, n: int, variant: int) -> list[int]:
    return prompts.chat_ids(tokenizer, prompts.generator_body(tokenizer, preceding, target, n))


JSON = GeneratorStyle(
    name="json",
    version="ebb9f0655b3473f3",
    wording=(prompts.GENERATOR_INSTRUCTIONS, "PASSAGE:\n", "TARGET:\n"),
    prompt=_json_prompt,
    parse=parse_qa,
    stop=lambda: JsonEnd().feed,
    requests=lambda preceding, target, n: 1,  # the instructions ask for n pairs at once
)


# --- lines -----------------------------------------------------------------------------------

# Worked examples in the line format, about made-up things unlike any document's, each with a
# short answer copied from its sentence. Request k about a sentence starts the rotation at
# example k, so several requests about one sentence ask different questions.
LINES_EXAMPLES = (
    ("The mill at Harlow Green was built in 1765 by the carpenter Josiah Pell.",
     "When was the mill at Harlow Green built?", "in 1765"),
    ("Brookfield holds its market every Thursday on Mill Square.",
     "Where does Brookfield hold its market?", "on Mill Square"),
    ("The Orla bridge is 240 metres long and was opened by Queen Edith.",
     "Who opened the Orla bridge?", "Queen Edith"),
    ("Members of the rowing club pay a fee of twelve dollars each spring.",
     "How much is the fee for members of the rowing club?", "twelve dollars"),
)
LINES_FORMAT = "Sentence: {sentence}\nQuestion: {question}\nAnswer: {answer}\n\n"
LINES_OPEN = "Sentence: {sentence}\nQuestion:"
_LINE_PAIR = re.compile(r"Question:[ \t]*(.+?)[ \t]*\n+Answer:[ \t]*(.+)")


def _lines_prompt(tokenizer, preceding: str, target: str, n: int, variant: int) -> list[int]:
    k = variant % len(LINES_EXAMPLES)
    examples = LINES_EXAMPLES[k:] + LINES_EXAMPLES[:k]
    text = "".join(LINES_FORMAT.format(sentence=s, question=q, answer=a) for s, q, a in examples)
    sentence = " ".join(target.split())
    return prompts.encode(tokenizer, text + LINES_OPEN.format(sentence=sentence))


def parse_lines(output: str, preceding: str = "", target: str = "",
                variant: int = 0) -> list[QAPair]:
    """The pair a `lines` request wrote: its output continues after "Question:", up to the
    first blank line."""
    block = ("Question:" + output).split("\n\n")[0]
    return [QAPair(q.strip(), a.strip()) for q, a in _LINE_PAIR.findall(block)]


_PAIR_END = re.compile(r"\n\n|\n(?:Sentence|Question):|Answer:[^\n]*\n")


def _blank_line_end() -> Callable[[str], bool]:
    """Done at a blank line, at the next example's or question's label, or once the answer's
    line is complete (a small model does not always leave the blank line)."""
    seen = []

    def feed(piece: str) -> bool:
        seen.append(piece)
        return _PAIR_END.search("".join(seen)) is not None

    return feed


LINES = GeneratorStyle(
    name="lines",
    version="d8c48b9c662fae4b",
    wording=(*(LINES_FORMAT.format(sentence=s, question=q, answer=a)
               for s, q, a in LINES_EXAMPLES), LINES_OPEN, _PAIR_END.pattern),
    prompt=_lines_prompt,
    parse=parse_lines,
    stop=_blank_line_end,
    requests=lambda preceding, target, n: n,  # one pair per request
)


# --- answers ---------------------------------------------------------------------------------

# Worked examples with the answer given first, as `answer_spans` would find it; the last one
# asks for the sentence's subject.
ANSWERS_EXAMPLES = (
    ("The mill at Harlow Green was built in 1765 by the carpenter Josiah Pell.", "1765",
     "When was the mill at Harlow Green built?"),
    ("Brookfield holds its market every Thursday on Mill Square.", "Mill Square",
     "Where does Brookfield hold its market?"),
    ("The Orla bridge is 240 metres long and was opened by Queen Edith.", "Queen Edith",
     "Who opened the Orla bridge?"),
    ("Marta Quill keeps the accounts of the rowing club.", "Marta Quill",
     "Who keeps the accounts of the rowing club?"),
)
ANSWERS_FORMAT = "Sentence: {sentence}\nAnswer: {answer}\nQuestion: {question}\n\n"
ANSWERS_OPEN = "Sentence: {sentence}\nAnswer: {answer}\nQuestion:"


def _answers_prompt(tokenizer, preceding: str, target: str, n: int, variant: int) -> list[int]:
    spans = answer_spans(target, preceding)
    if variant >= len(spans):  # nothing left to ask for: the model writes both
        return _lines_prompt(tokenizer, preceding, target, n, variant)
    k = variant % len(ANSWERS_EXAMPLES)
    examples = ANSWERS_EXAMPLES[k:] + ANSWERS_EXAMPLES[:k]
    text = "".join(ANSWERS_FORMAT.format(sentence=s, answer=a, question=q)
                   for s, a, q in examples)
    sentence = " ".join(target.split())
    return prompts.encode(tokenizer, text + ANSWERS_OPEN.format(sentence=sentence,
                                                              answer=spans[variant]))


def parse_answers(output: str, preceding: str = "", target: str = "",
                  variant: int = 0) -> list[QAPair]:
    """The pair an `answers` request made: the question it wrote (up to the end of its line,
    a question mark required) and the span it was given."""
    spans = answer_spans(target, preceding)
    if variant >= len(spans):
        return parse_lines(output)
    question = output.split("\n")[0].strip()
    if not question.endswith("?"):
        return []
    answer = spans[variant]
    if has_words(question, answer):
        # It asked about something else, naming the answer it was given ("Druvourholm has a
        # population of 37390", given "Druvourholm": "What is the population of
        # Druvourholm?"). Where one other span of the sentence is not in the question, that
        # span is what it asks for.
        others = [s for s in spans if s != answer and not has_words(question, s)]
        if len(others) != 1:
            return [QAPair(question, answer)]  # the filter drops it: answer in question
        answer = others[0]
    if len(spans) > 1 and not any(has_words(question, s) for s in spans if s != answer):
        return []  # names nothing of its sentence: "Who first took to the water?" of a ship
    return [QAPair(question, answer)]


ANSWERS = GeneratorStyle(
    name="answers",
    version="132e31f798bef1a0",
    wording=(*(ANSWERS_FORMAT.format(sentence=s, answer=a, question=q)
               for s, a, q in ANSWERS_EXAMPLES), ANSWERS_OPEN, *LINES.wording,
             NUMBER.pattern, NAME.pattern, *sorted(NOT_NAMES)),
    prompt=_answers_prompt,
    parse=parse_answers,
    stop=_blank_line_end,
    requests=lambda preceding, target, n: n,
)


# --- about -----------------------------------------------------------------------------------

# Questions are asked the way a reader asks them: a document's questions name what they are
# about and ask for something the sentence tells of it ("When was X born?", not "Who was born
# in 1826?"). Worked examples of both forms: the subject and the answer given, the model writes
# the question; or the subject given, the model writes question and answer.
ABOUT_EXAMPLES = (  # sentence, subject, answer given, its question, a question, its answer
    ("The mill at Harlow Green was built in 1765 by the carpenter Josiah Pell.", "Harlow Green",
     "1765", "When was the mill at Harlow Green built?",
     "Who built the mill at Harlow Green?", "the carpenter Josiah Pell"),
    ("Brookfield holds its market every Thursday on Mill Square.", "Brookfield",
     "Mill Square", "Where does Brookfield hold its market?",
     "When does Brookfield hold its market?", "every Thursday"),
    ("The Orla bridge is 240 metres long and was opened by Queen Edith.", "Orla",
     "Queen Edith", "Who opened the Orla bridge?",
     "How long is the Orla bridge?", "240 metres"),
    ("Marta Quill was born in Dunmore and keeps the accounts of the rowing club.",
     "Marta Quill", "Dunmore", "Where was Marta Quill born?",
     "What does Marta Quill keep?", "the accounts of the rowing club"),
)
BLANK = "___"
ABOUT_GIVEN = "Sentence: {sentence}\nAbout: {subject}\nAnswer: {answer}\nQuestion: {question}\n\n"
ABOUT_FREE = "Sentence: {sentence}\nAbout: {subject}\nQuestion: {question}\nAnswer: {answer}\n\n"


def _about_requests(preceding: str, target: str, n: int) -> int:
    return n if subject_and_asks(target, preceding)[1] else 0


def _about_prompt(tokenizer, preceding: str, target: str, n: int, variant: int) -> list[int]:
    subject, asks = subject_and_asks(target, preceding)
    if subject is None:  # numbers only: asked as the answers style asks
        return _answers_prompt(tokenizer, preceding, target, n, variant)
    k = (variant + len(target)) % len(ABOUT_EXAMPLES)  # sentences see the examples in turn
    examples = ABOUT_EXAMPLES[k:] + ABOUT_EXAMPLES[:k]
    answer = asks[variant % len(asks)]
    sentence = " ".join(target.split())
    if answer is None:
        text = "".join(ABOUT_FREE.format(sentence=e[0], subject=e[1], question=e[4],
                                         answer=e[5]) for e in examples)
        opening = f"Sentence: {sentence}\nAbout: {subject}\nQuestion:"
    else:  # the answer blanked out of its sentence: the question asks for what is missing
        text = "".join(ABOUT_GIVEN.format(sentence=_blank(e[0], e[2]), subject=e[1],
                                          answer=e[2], question=e[3]) for e in examples)
        opening = (f"Sentence: {_blank(sentence, answer)}\nAbout: {subject}\n"
                   f"Answer: {answer}\nQuestion:")
    return prompts.encode(tokenizer, text + opening)


def _blank(sentence: str, span: str) -> str:
    return re.sub(whole_words(span), BLANK, sentence)


def parse_about(output: str, preceding: str = "", target: str = "",
                variant: int = 0) -> list[QAPair]:
    """The pair an `about` request made, kept only if its question names the subject: the
    question it wrote and the answer it was given, or (where none was given) the pair it
    wrote."""
    subject, asks = subject_and_asks(target, preceding)
    if subject is None:
        return parse_answers(output, preceding, target, variant)
    answer = asks[variant % len(asks)]
    if answer is None:
        pairs = parse_lines(output)
    else:
        question = output.split("\n")[0].strip()
        pairs = [QAPair(question, answer)] if question.endswith("?") else []
    return [p for p in pairs if has_words(p.question, subject)
            and _asks_what_the_sentence_tells(p, target, subject) and _wh_fits(p)]


def _stems(text: str) -> set[str]:
    return {w[:4] for w in content_words(text)}


def _asks_what_the_sentence_tells(pair: QAPair, target: str, subject: str) -> bool:
    """The question shares a word (by its first four letters) with the sentence besides the
    subject's and the answer's: "What is the captain of the Greisim?", not "What is the
    Greisim?" (which any of its sentences would answer)."""
    told = _stems(target) - _stems(subject) - _stems(pair.answer)
    return bool(_stems(pair.question) & told)


_ASKS_NUMBER = re.compile(r"^(when|what year|in what year|in which year|how many|how much|"
                          r"how old|how long|how big|how large)\b", re.IGNORECASE)
_ASKS_NAME = re.compile(r"^(who|whom|whose|where|in which town|which town|which company|"
                        r"which person)\b", re.IGNORECASE)


def _wh_fits(pair: QAPair) -> bool:
    """The question's opening asks for the kind of thing its answer is: a number for "when"
    or "how many", something that is no bare number for "who" or "where"."""
    number = NUMBER.fullmatch(pair.answer.strip()) is not None
    if _ASKS_NAME.match(pair.question):
        return not number
    if _ASKS_NUMBER.match(pair.question) and pair.answer[:1].isupper():
        return False  # "When was the Greisim launched?" -> "Purford"
    return True


ABOUT = GeneratorStyle(
    name="about",
    version="6a361cdbdfe273c0",
    wording=(ABOUT_GIVEN, ABOUT_FREE, *(str(e) for e in ABOUT_EXAMPLES), *ANSWERS.wording,
             _ASKS_NUMBER.pattern, _ASKS_NAME.pattern, *sorted(QUESTION_WORDS)),
    prompt=_about_prompt,
    parse=parse_about,
    stop=_blank_line_end,
    requests=_about_requests,
)


STYLES = {style.name: style for style in (JSON, LINES, ANSWERS, ABOUT)}
SMALL_MODEL = 1e9  # parameters; below it, `auto` picks the lines style


def resolve_style(name: str, model=None) -> GeneratorStyle:
    """The style called `name`; `auto` picks `lines` for models under 1B parameters (measured
    on SmolLM2-135M, see the module docstring) and `json` for larger ones."""
    if name == "auto":
        # mlx_lm imports transformers (~1 s): deferred so `lift-mlx --help` stays fast
        from mlx_lm.utils import get_total_parameters

        small = model is not None and get_total_parameters(model) < SMALL_MODEL
        return LINES if small else JSON
    if name not in STYLES:
        raise LiftError(f"unknown generator style {name!r}; choose auto or one of "
                        f"{', '.join(STYLES)}")
    return STYLES[name]
