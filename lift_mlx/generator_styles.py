"""How the generator is asked for question/answer pairs: a prompt, a parser and a stop rule
that belong together, one `GeneratorStyle` each, picked by name.

- `json`: chat instructions asking for `{"qa_list": [...]}` (instruct models of ~1.5B and up
  follow them).
- `lines`: a plain completion prompt of worked examples in a `Sentence:/Question:/Answer:`
  line format, ending where the model is to write the next question. Small models follow a
  pattern far better than instructions: SmolLM2-135M asked for JSON copies the target sentence
  back (0 usable pairs of 33 requests), while a few examples get it to write grounded pairs.

A style's fingerprint is a hash of its wording, so cached QA pairs are keyed on the prompt
itself and any edit to it invalidates them. Adding a style: write a `GeneratorStyle` and add
it to `STYLES`.
"""

from __future__ import annotations

import hashlib
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
    parse: Callable[[str], list[QAPair]]  # the generator's output -> pairs
    stop: Callable[[], Callable[[str], bool]]  # a fresh watcher per request: piece -> done?
    requests_per_window: Callable[[int], int]  # requests made for n wanted pairs

    @property
    def fingerprint(self) -> str:
        blob = json.dumps([self.name, *self.wording])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- json ------------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_PAIR = re.compile(
    r'"question"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"answer"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL
)


def parse_qa(output: str) -> list[QAPair]:
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


def parse_lines(output: str) -> list[QAPair]:
    """The pair a `lines` request wrote: its output continues after "Question:", up to the
    first blank line."""
    block = ("Question:" + output).split("\n\n")[0]
    return [QAPair(q.strip(), a.strip()) for q, a in _LINE_PAIR.findall(block)]


def _blank_line_end() -> Callable[[str], bool]:
    seen = []

    def feed(piece: str) -> bool:
        seen.append(piece)
        text = "".join(seen)
        return "\n\n" in text or "\nSentence:" in text

    return feed


LINES = GeneratorStyle(
    name="lines",
    wording=(*(LINES_FORMAT.format(sentence=s, question=q, answer=a)
               for s, q, a in LINES_EXAMPLES), LINES_OPEN),
    prompt=_lines_prompt,
    parse=parse_lines,
    stop=_blank_line_end,
    requests_per_window=lambda n: n,  # one pair per request
)


STYLES = {style.name: style for style in (JSON, LINES)}
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
