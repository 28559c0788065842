import re

import pytest

from lift_mlx.errors import LiftError
from lift_mlx.eval.metrics import keyword_match, normalize_answer, score
from lift_mlx.eval.niah import (
    DEFAULT_DEPTHS,
    DEFAULT_NEEDLES,
    Needle,
    build_niah,
    load_haystack,
    niah_set,
)

NEEDLE = DEFAULT_NEEDLES[0]
DEPTHS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]


def count_words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def haystack() -> str:
    return load_haystack()


def test_haystack_is_shipped_prose_of_the_promised_size(haystack):
    size = len(haystack.encode("utf-8"))
    assert 150_000 <= size <= 300_000
    assert len(re.findall(r"[.!?]\s", haystack)) > 1000  # many sentences to cut at


def test_haystack_holds_no_needle_keyword(haystack):
    text = f" {normalize_answer(haystack)} "
    for needle in DEFAULT_NEEDLES:
        for keyword in needle.keywords:
            # Not the phrase, and not any of its words either.
            assert f" {normalize_answer(keyword)} " not in text
            for word in normalize_answer(keyword).split():
                assert f" {word} " not in text, (keyword, word)
        assert keyword_match(haystack, needle.keywords) == 0.0


@pytest.mark.parametrize("n_tokens", [1000, 4000, 20000])
@pytest.mark.parametrize("depth", DEPTHS)
def test_needle_sits_at_the_requested_depth(haystack, n_tokens, depth):
    document, offset = build_niah(haystack, NEEDLE, n_tokens, depth, count_words)
    assert document[offset:].startswith(NEEDLE.text)
    assert document.count(NEEDLE.text) == 1
    # One sentence of slack either way, plus the needle's own length at the end.
    assert offset / len(document) == pytest.approx(depth, abs=0.03)


def test_depth_is_a_fraction_not_a_percentage(haystack):
    # The reference code divided the depth by 100 twice, which put a 50% needle at 0.005%.
    # Here depth 0.5 must land in the middle, and the quarters must be in order and apart.
    positions = []
    for depth in (0.25, 0.5, 0.75):
        document, offset = build_niah(haystack, NEEDLE, 8000, depth, count_words)
        positions.append(offset / len(document))
    assert positions[0] > 0.2 and 0.45 < positions[1] < 0.55 and positions[2] > 0.7
    # A percentage is refused rather than silently misread.
    with pytest.raises(LiftError, match="fraction"):
        build_niah(haystack, NEEDLE, 8000, 50, count_words)


def test_needle_is_placed_at_a_sentence_boundary(haystack):
    for depth in DEPTHS:
        document, offset = build_niah(haystack, NEEDLE, 2000, depth, count_words)
        before = document[:offset].rstrip()
        after = document[offset + len(NEEDLE.text) :]
        assert before == "" or before[-1] in ".!?"
        assert after == "" or after[0] == " " and after[1].isupper()


@pytest.mark.parametrize("n_tokens", [500, 1000, 8000, 60000, 128000])
def test_document_has_about_n_tokens(haystack, n_tokens):
    document, _ = build_niah(haystack, NEEDLE, n_tokens, 0.5, count_words)
    # Never over; short by less than one sentence (the longest is ~40 words).
    assert n_tokens - 60 <= count_words(document) <= n_tokens


def test_long_documents_repeat_the_haystack_and_start_with_it(haystack):
    assert count_words(haystack) < 128000  # so this length needs more than one copy
    document, _ = build_niah(haystack, NEEDLE, 128000, 1.0, count_words)
    assert document.startswith(haystack.strip()[:1000])


def test_too_small_a_budget_is_a_user_error(haystack):
    with pytest.raises(LiftError, match="cannot hold the needle"):
        build_niah(haystack, NEEDLE, 5, 0.5, count_words)
    with pytest.raises(LiftError, match="cannot hold one sentence"):
        build_niah("One long sentence without end " * 10, NEEDLE, 30, 0.5, count_words)


def test_custom_haystack_and_counter():
    haystack = " ".join(f"Sentence number {i} is here." for i in range(200))
    needle = Needle("The code word is bramble.", "What is the code word?", ["bramble"])
    document, offset = build_niah(haystack, needle, 400, 0.5, len)  # count characters
    assert len(document) <= 400
    assert document[offset:].startswith(needle.text)
    assert offset / len(document) == pytest.approx(0.5, abs=0.1)


def test_niah_set_builds_one_doc_per_length_and_depth(haystack):
    lengths, depths = [1000, 3000], [0.0, 0.5, 1.0]
    docs = niah_set(lengths, depths, DEFAULT_NEEDLES, count_words, haystack=haystack)
    assert len(docs) == 6
    assert len({d.id for d in docs}) == 6
    for i, doc in enumerate(docs):
        (question,) = doc.questions
        needle = DEFAULT_NEEDLES[i % len(DEFAULT_NEEDLES)]
        length, depth = lengths[i // 3], depths[i % 3]
        assert doc.source == "niah"
        assert question.question == needle.question
        assert question.answers == [needle.text]
        assert question.keywords == needle.keywords
        assert question.meta["length"] == length and question.meta["depth"] == depth
        assert doc.document[question.meta["offset"] :].startswith(needle.text)
        assert count_words(doc.document) <= length
        # The needle itself answers its question.
        assert score(needle.text, question)["keyword_match"] == 1.0


def test_default_depths_span_start_to_end():
    assert len(DEFAULT_DEPTHS) == 10
    assert DEFAULT_DEPTHS[0] == 0.0 and DEFAULT_DEPTHS[-1] == 1.0
    assert all(0.0 <= d <= 1.0 for d in DEFAULT_DEPTHS)


def test_niah_set_with_the_shipped_haystack():
    (doc,) = niah_set([1500], [0.5], DEFAULT_NEEDLES[1:2], count_words)
    assert DEFAULT_NEEDLES[1].text in doc.document
