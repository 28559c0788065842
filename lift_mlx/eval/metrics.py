"""Offline answer metrics: token F1, exact match, answer containment, ROUGE-L, keyword match,
choice accuracy.

Every metric is a pure function of strings that returns a float in [0, 1], so an evaluation
can be re-scored from saved predictions without a model. Text is compared after the usual
SQuAD normalization (lowercase, no punctuation, no articles, single spaces), as in the
LongBench and LooGLE scorers.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING

from ..split import split_sentences

if TYPE_CHECKING:
    from .datasets import Question

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)
CHOICE_LETTERS = "ABCD"


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD)."""
    s = s.lower()
    # string.punctuation alone keeps the scores comparable with SQuAD on ASCII; the Unicode
    # "P*" categories also drop curly quotes and dashes that models like to emit.
    s = "".join(
        ch for ch in s if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P")
    )
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _as_list(references: list[str] | str) -> list[str]:
    # A bare string would otherwise be iterated character by character and score nonsense.
    return [references] if isinstance(references, str) else list(references)


def _f_measure(overlap: int, pred: list[str], ref: list[str]) -> float:
    """F1 of an overlap count between two token lists (1.0 when both are empty)."""
    if not pred or not ref:
        return float(pred == ref)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def _f1(pred: list[str], ref: list[str]) -> float:
    return _f_measure(sum((Counter(pred) & Counter(ref)).values()), pred, ref)


def token_f1(prediction: str, references: list[str]) -> float:
    """Bag-of-tokens F1 between the normalized prediction and its best reference."""
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(r).split()) for r in _as_list(references)), default=0.0)


def exact_match(prediction: str, references: list[str]) -> float:
    """1.0 when the normalized prediction equals a normalized reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in _as_list(references)))


def answer_contains(prediction: str, references: list[str] | str) -> float:
    """1.0 when a normalized reference occurs, as whole words, in the normalized first
    sentence of the prediction: a right answer said in a sentence counts, a long recitation
    that happens to pass the answer later does not."""
    first = (split_sentences(prediction) or [""])[0]
    pred = f" {normalize_answer(first)} "
    refs = [normalize_answer(r) for r in _as_list(references)]
    return float(any(r and f" {r} " in pred for r in refs))


def _lcs_length(a: list[str], b: list[str]) -> int:
    # One row of the dynamic-programming table at a time: summaries of a few thousand tokens
    # would need millions of cells as a full table.
    if len(b) > len(a):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(row[j], row[j - 1])
            diagonal = above
    return row[-1]


def _rouge_l(pred: list[str], ref: list[str]) -> float:
    return _f_measure(_lcs_length(pred, ref) if pred and ref else 0, pred, ref)


def rouge_l(prediction: str, references: list[str]) -> float:
    """ROUGE-L F1 (longest common token subsequence) against the best reference."""
    pred = normalize_answer(prediction).split()
    return max(
        (_rouge_l(pred, normalize_answer(r).split()) for r in _as_list(references)), default=0.0
    )


def keyword_match(prediction: str, keywords: list[str]) -> float:
    """Share of keywords that occur as whole words in the normalized prediction.

    Keywords that normalize to nothing (e.g. "the") are ignored; with none left the score is 0.
    """
    # Padding with spaces matches whole words only: "art" must not count inside "start".
    pred = f" {normalize_answer(prediction)} "
    wanted = [k for k in (normalize_answer(k) for k in _as_list(keywords)) if k]
    if not wanted:
        return 0.0
    return sum(f" {k} " in pred for k in wanted) / len(wanted)


def _gold_index(answer: str, choices: list[str]) -> int | None:
    letter = answer.strip().strip("()[].:").strip()
    if len(letter) == 1 and letter.upper() in CHOICE_LETTERS[: len(choices) or None]:
        return CHOICE_LETTERS.index(letter.upper())
    target = normalize_answer(answer)
    for i, choice in enumerate(choices):
        if normalize_answer(choice) == target:
            return i
    return None


def _picked_index(prediction: str, choices: list[str]) -> int | None:
    letters = CHOICE_LETTERS[: len(choices)] if choices else CHOICE_LETTERS
    found: list[tuple[int, int, int]] = []  # (position, -length, choice index)
    for m in re.finditer(rf"(?<![A-Za-z0-9])([{letters}])(?![A-Za-z0-9])", prediction):
        # "A good option is ..." uses the article, not the letter.
        if m.group(1) == "A" and re.match(r"\s+[a-z]", prediction[m.end() :]):
            continue
        found.append((m.start(), -1, letters.index(m.group(1))))
    for i, choice in enumerate(choices):
        if not choice.strip():
            continue
        pattern = rf"(?<!\w){re.escape(choice.strip())}(?!\w)"
        m = re.search(pattern, prediction, flags=re.IGNORECASE)
        if m:
            # At equal positions the longer choice wins: "Paris, Texas" over "Paris".
            found.append((m.start(), -len(m.group(0)), i))
    return min(found)[2] if found else None


def choice_accuracy(prediction: str, answer: str, choices: list[str]) -> float:
    """1.0 when the first choice the prediction names (letter A-D or choice text) is the answer.

    `answer` is the correct letter or the correct choice's text.
    """
    picked = _picked_index(prediction, choices)
    if picked is None:
        return 0.0
    gold = _gold_index(answer, choices)
    if gold is not None:
        return float(picked == gold)
    # The answer is neither a letter nor one of the choices: compare texts.
    return float(bool(choices) and normalize_answer(choices[picked]) == normalize_answer(answer))


def score(prediction: str, question: Question) -> dict[str, float]:
    """All metrics that fit the question: f1/em/contains/rouge_l, keyword_match, accuracy."""
    scores: dict[str, float] = {}
    if question.answers:
        scores["f1"] = token_f1(prediction, question.answers)
        scores["em"] = exact_match(prediction, question.answers)
        scores["contains"] = answer_contains(prediction, question.answers)
        scores["rouge_l"] = rouge_l(prediction, question.answers)
    if question.keywords:
        scores["keyword_match"] = keyword_match(prediction, question.keywords)
    if question.choices and question.answers:
        scores["accuracy"] = choice_accuracy(prediction, question.answers[0], question.choices)
    return scores
