"""Split: sentences for task generation, token segments for language modelling, head+tail views.

The sentence splitter is a dependency-free regex splitter (spaCy would need a model download).
It errs towards keeping text together: a missed split only makes a task window longer.
"""

from __future__ import annotations

import re
from itertools import pairwise

from . import prompts

# Words that end with a period without ending the sentence. "no" is handled apart: it is only
# an abbreviation before a number ("No. 5"); elsewhere it is the word ("He said no. Then...").
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof st jr sr vs etc inc ltd co fig figs
    approx cf al vol vols pp eq eqs ref refs dept corp bros mt ave gen col lt sgt capt rev hon
    """.split()
)

# A list item marker at the start of a line: "-", "*", "•", "1.", "2)", "a)", "(iv)". Letters
# with a period ("a.") are left out: they cannot be told apart from initials ("J. R. R.").
_LIST_MARKER = r"(?:[-*•◦‣▪●–]|\d{1,3}[.)]|\(?(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})\))"
_LIST_ITEM = re.compile(rf"{_LIST_MARKER}[^\S\n]+")
# Where a sentence ends whatever precedes it: a blank line, or a line that starts a list item.
_HARD_BREAK = re.compile(rf"\n[^\S\n]*\n|\n(?=[^\S\n]*{_LIST_MARKER}[^\S\n])")
# A possible sentence end: terminal punctuation, then closing quotes or brackets. CJK full
# stops end a sentence outright; the others only before a space and a sentence start.
_END = re.compile(r"(?P<cjk>[。！？]+[」』”’）]*)|(?P<stop>[.!?…]+)(?:[\"'”’»)\]}]*)")
_OPENERS = "\"'“‘«([{"
# Letters separated by periods: "e.g", "i.e", "a.m", "U.S" (without the final period).
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in text, in order, without surrounding whitespace."""
    spans: list[tuple[int, int]] = []
    cuts = [0, *(m.start() for m in _HARD_BREAK.finditer(text)), len(text)]
    for a, b in pairwise(cuts):
        a, b = _strip(text, a, b)
        if a < b:
            spans.extend(_block_spans(text, a, b))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of text, in order, stripped; see sentence_spans."""
    return [text[a:b] for a, b in sentence_spans(text)]


def _block_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    # A block has no blank line and at most one list item, which starts it.
    item = _LIST_ITEM.match(text, start, end)
    scan_from = item.end() if item else start  # the "1." of a list item ends nothing
    spans = []
    sentence_start = start
    for m in _END.finditer(text, scan_from, end):
        after = _skip_space(text, m.end(), end)
        if after == end:
            break  # the block's last sentence is added below
        if not m.group("cjk"):
            if after == m.end():
                continue  # no space after: "3.14", "v1.2.3", "example.com", "a@b.org"
            nxt = text[after]
            if not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
                continue
            if m.group("stop") == "." and _is_abbreviation(
                _word_before(text, start, m.start()), nxt
            ):
                continue
        spans.append((sentence_start, m.end()))
        sentence_start = after
    spans.append((sentence_start, end))
    return spans


def _is_abbreviation(word: str, next_char: str) -> bool:
    lower = word.lower()
    if lower == "no":
        return next_char.isdigit()
    if lower in ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isupper():
        return True  # an initial: "J. R. R. Tolkien"
    return _DOTTED.fullmatch(word) is not None


def _word_before(text: str, start: int, i: int) -> str:
    j = i
    while j > start and not text[j - 1].isspace():
        j -= 1
    return text[j:i].lstrip(_OPENERS)


def _skip_space(text: str, i: int, end: int) -> int:
    while i < end and text[i].isspace():
        i += 1
    return i


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    a = _skip_space(text, a, b)
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def segment_starts(n_tokens: int, seg_len: int, stride: int) -> list[int]:
    """Start of each seg_len-token window, one every stride tokens; the last window ends at
    n_tokens so no token is lost. A document of at most seg_len tokens is one window."""
    if seg_len < 1:
        raise ValueError(f"seg_len must be at least 1, got {seg_len}")
    if not 1 <= stride <= seg_len:
        raise ValueError(f"stride must be between 1 and seg_len ({seg_len}), got {stride}")
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be at least 0, got {n_tokens}")
    if n_tokens == 0:
        return []  # an empty window would be a training sample with nothing to learn
    last = max(n_tokens - seg_len, 0)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def segments(tokens: list[int], seg_len: int, stride: int) -> list[list[int]]:
    """The token windows at segment_starts(len(tokens), seg_len, stride)."""
    tokens = list(tokens)
    return [tokens[s : s + seg_len] for s in segment_starts(len(tokens), seg_len, stride)]


def head_tail(
    tokens: list[int], budget: int, separator: list[int], head_fraction: float = 0.5
) -> list[int]:
    """tokens if they fit in budget, else a head slice + separator + tail slice of exactly
    budget tokens; the head gets round((budget - len(separator)) * head_fraction) of them."""
    if budget < len(separator) + 2:
        raise ValueError(
            f"budget ({budget}) must leave room for the separator ({len(separator)} tokens) "
            "and at least 2 document tokens"
        )
    if not 0.0 <= head_fraction <= 1.0:
        raise ValueError(f"head_fraction must be between 0 and 1, got {head_fraction}")
    if len(tokens) <= budget:
        return list(tokens)
    room = budget - len(separator)
    n_head = round(room * head_fraction)
    n_tail = room - n_head
    # Slice the tail from an explicit index: tokens[-0:] would be the whole list.
    return [*tokens[:n_head], *separator, *tokens[len(tokens) - n_tail :]]


def head_tail_context(tokenizer, doc_tokens: list[int], budget: int) -> list[int]:
    """The document's tokens, or its head and tail joined by an ellipsis, within `budget`."""
    separator = prompts.encode(tokenizer, prompts.ELLIPSIS)
    if budget < len(separator) + 2:
        return []
    return head_tail(doc_tokens, budget, separator)
