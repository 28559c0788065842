"""How the generator is asked for question/answer pairs: a prompt, a parser and a stop rule
that belong together, one `GeneratorStyle` each, picked by name.

- `json`: chat instructions asking for `{"qa_list": [...]}` (instruct models of ~1.5B and up
  follow them).
- `lines`: a plain completion prompt of worked examples in a `Sentence:/Question:/Answer:`
  line format, ending where the model is to write the next question. Small models follow a
  pattern far better than instructions: SmolLM2-135M asked for JSON copies the target sentence
  back (0 usable pairs of 33 requests), while a few examples get it to write grounded pairs.

A style's fingerprint is a hash of its wording and its functions' code, so cached QA pairs
are keyed on the prompt and parser themselves and any edit to them invalidates them. Adding a
style: write a `GeneratorStyle` and add it to `STYLES`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from . import prompts
from .errors import LiftError


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass(frozen=True)
class GeneratorStyle:
    name: str
    wording: tuple[str, ...]  # every text the prompt is made of (its fingerprint)
    prompt: Callable  # (tokenizer, preceding, target, n, variant) -> token ids
    # (the generator's output, the request's preceding text, target text, variant) -> pairs
    parse: Callable[[str, str, str, int], list[QAPair]]
    stop: Callable[[], Callable[[str], bool]]  # a fresh watcher per request: piece -> done?
    requests_per_window: Callable[[int], int]  # requests made for n wanted pairs

    @property
    def fingerprint(self) -> str:
        """A hash of the style's wording and of its functions' code: editing either keys its
        cached pairs anew."""
        blob = json.dumps([self.name, *self.wording,
                           *(_source(f) for f in (self.prompt, self.parse, self.stop))])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):  # made where no source file is kept (a REPL)
        return getattr(function, "__qualname__", repr(function))


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
    wording=(prompts.GENERATOR_INSTRUCTIONS, "PASSAGE:\n", "TARGET:\n"),
    prompt=_json_prompt,
    parse=parse_qa,
    stop=lambda: JsonEnd().feed,
    requests_per_window=lambda n: 1,  # the instructions ask for n pairs at once
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
    wording=(*(LINES_FORMAT.format(sentence=s, question=q, answer=a)
               for s, q, a in LINES_EXAMPLES), LINES_OPEN, _PAIR_END.pattern),
    prompt=_lines_prompt,
    parse=parse_lines,
    stop=_blank_line_end,
    requests_per_window=lambda n: n,  # one pair per request
)


# --- answers ---------------------------------------------------------------------------------

# A span that a question can ask for: a number (with the word after it, "240 metres"), or a run
# of capitalised words (a name; one word alone not where it may only start the sentence).
_NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")
_NAME = re.compile(r"\b[A-Z][\w'-]*(?:\s+(?:of|the|de|van|von)?\s*[A-Z][\w'-]*)*")
_NOT_NAMES = frozenset(
    "A An The In On At Of To By For From With And Or But Its It This That These Those He She "
    "They We I His Her Their Our Yes No".split())


def answer_spans(target: str, preceding: str = "") -> list[str]:
    """Short answers a question about `target` could have: its numbers and its names, each
    once, the last first (an English sentence usually ends with what it tells: "X was born in
    1826" is asked as "When was X born?" before "Who was born in 1826?"). One capitalised
    word that opens a sentence counts as a name only where it is capitalised elsewhere in
    `preceding` or `target` too ("Toureinwick ... Toureinwick", not "Visitors")."""
    found: list[tuple[int, str]] = []
    for m in _NUMBER.finditer(target):
        found.append((m.start(), m.group()))
    sentence_starts = {0} | {m.end() for m in re.finditer(r"[.!?]\s+", target)}
    context = f"{preceding} {target}"
    for m in _NAME.finditer(target):
        words = m.group().split()
        while words and words[0] in _NOT_NAMES:  # "The Orla" -> "Orla"
            words = words[1:]
        if not words:
            continue
        name = " ".join(words)
        start = m.start() + m.group().index(words[0])
        if (len(words) == 1 and start in sentence_starts
                and len(re.findall(rf"\b{re.escape(name)}\b", context)) < 2):
            continue  # one capitalised word opening a sentence: as likely a common word
        found.append((start, name))
    seen, out = set(), []
    for _, span in sorted(found, reverse=True):
        if span not in seen and not any(span in other and span != other for _, other in found):
            seen.add(span)
            out.append(span)
    return out


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


def has_words(text: str, span: str) -> bool:
    """Whether `span` occurs in `text` as whole words."""
    return re.search(rf"(?<!\w){re.escape(span)}(?!\w)", text) is not None


ANSWERS = GeneratorStyle(
    name="answers",
    wording=(*(ANSWERS_FORMAT.format(sentence=s, answer=a, question=q)
               for s, a, q in ANSWERS_EXAMPLES), ANSWERS_OPEN, *LINES.wording,
             _NUMBER.pattern, _NAME.pattern, *sorted(_NOT_NAMES)),
    prompt=_answers_prompt,
    parse=parse_answers,
    stop=_blank_line_end,
    requests_per_window=lambda n: n,
)


STYLES = {style.name: style for style in (JSON, LINES, ANSWERS)}
SMALL_MODEL = 1e9  # parameters; below it, `auto` picks the lines style


def resolve_style(name: str, model=None) -> GeneratorStyle:
    """The style called `name`; `auto` picks `lines` for models under 1B parameters (measured
    on SmolLM2-135M, see the module docstring) and `json` for larger ones."""
    if name == "auto":
        from mlx_lm.utils import get_total_parameters

        small = model is not None and get_total_parameters(model) < SMALL_MODEL
        return LINES if small else JSON
    if name not in STYLES:
        raise LiftError(f"unknown generator style {name!r}; choose auto or one of "
                        f"{', '.join(STYLES)}")
    return STYLES[name]
