import math
import random
from itertools import pairwise

import pytest

from lift_mlx.split import head_tail, segment_starts, segments, sentence_spans, split_sentences


def check_spans(text: str) -> list[tuple[int, int]]:
    """sentence_spans(text), after checking it: ordered, stripped, and only whitespace between."""
    spans = sentence_spans(text)
    end = 0
    for a, b in spans:
        assert end <= a < b <= len(text)
        assert text[a:b] == text[a:b].strip()
        assert text[end:a].strip() == ""
        end = b
    assert text[end:].strip() == ""
    assert split_sentences(text) == [text[a:b] for a, b in spans]
    return spans


# sentences


def test_plain_sentences():
    text = "The cat sat. It was warm! Was it? Yes… Then it slept."
    assert split_sentences(text) == [
        "The cat sat.",
        "It was warm!",
        "Was it?",
        "Yes…",
        "Then it slept.",
    ]


def test_empty_and_whitespace():
    assert sentence_spans("") == []
    assert sentence_spans(" \n\n\t ") == []
    assert sentence_spans("  no end mark  ") == [(2, 13)]


ABBREVIATIONS = (
    "Mr. Mrs. Ms. Dr. Prof. St. Jr. Sr. vs. etc. e.g. i.e. Inc. Ltd. Co. Fig. a.m. p.m. U.S."
)


@pytest.mark.parametrize("abbreviation", ABBREVIATIONS.split())
def test_no_split_after_abbreviations(abbreviation):
    text = f"We met {abbreviation} Smith at noon. Then we left."
    assert split_sentences(text) == [f"We met {abbreviation} Smith at noon.", "Then we left."]


def test_abbreviations_ignore_case_and_brackets():
    text = "Ask DR. Who (e.g. Rose) about it. See (Fig. 3) too. Done."
    assert split_sentences(text) == [
        "Ask DR. Who (e.g. Rose) about it.",
        "See (Fig. 3) too.",
        "Done.",
    ]


def test_no_is_an_abbreviation_only_before_a_number():
    text = "Room No. 5 was empty. He said No. Then he left. She said no. That was all."
    assert split_sentences(text) == [
        "Room No. 5 was empty.",
        "He said No.",
        "Then he left.",
        "She said no.",
        "That was all.",
    ]


def test_initials():
    text = "J. R. R. Tolkien wrote it. George R. R. Martin did not. A. Smith agreed."
    assert split_sentences(text) == [
        "J. R. R. Tolkien wrote it.",
        "George R. R. Martin did not.",
        "A. Smith agreed.",
    ]


def test_decimals_versions_urls_and_emails():
    text = (
        "Pi is 3.14 and e is 2.718. Python 3.11.7 is out. "
        "See https://docs.python.org/3/library/re.html?x=1.5 for more. "
        "Write to jane.doe@example.co.uk today. Visit example.com. Then rest. "
        "It costs 4. Five more."
    )
    assert split_sentences(text) == [
        "Pi is 3.14 and e is 2.718.",
        "Python 3.11.7 is out.",
        "See https://docs.python.org/3/library/re.html?x=1.5 for more.",
        "Write to jane.doe@example.co.uk today.",
        "Visit example.com.",
        "Then rest.",
        "It costs 4.",
        "Five more.",
    ]


def test_lowercase_after_a_period_does_not_split():
    text = "The value of x. then y. And z."
    assert split_sentences(text) == ["The value of x. then y.", "And z."]


def test_quotes_and_brackets():
    text = (
        '"Stop." He stopped. She asked, "Why?" (Nobody knew.) '
        "'Fine,' he said. [It ended.] “Curly.” ‘Single.’ «Guillemets.» 2 left."
    )
    assert split_sentences(text) == [
        '"Stop."',
        "He stopped.",
        'She asked, "Why?"',
        "(Nobody knew.)",
        "'Fine,' he said.",
        "[It ended.]",
        "“Curly.”",
        "‘Single.’",
        "«Guillemets.»",
        "2 left.",
    ]


def test_ellipsis_and_repeated_marks():
    text = "Wait... what? Really?! Yes!!! Well… Maybe. Hmm... It is."
    assert split_sentences(text) == [
        "Wait... what?",
        "Really?!",
        "Yes!!!",
        "Well…",
        "Maybe.",
        "Hmm...",
        "It is.",
    ]


def test_blank_line_always_ends_a_sentence():
    text = "Chapter One\n\nIt began with a letter\n \t \nthat never came. The end"
    assert split_sentences(text) == [
        "Chapter One",
        "It began with a letter",
        "that never came.",
        "The end",
    ]


def test_single_newline_inside_a_paragraph_does_not_split():
    text = "A line that wraps\nin the middle of a sentence. And a new\nsentence too."
    assert split_sentences(text) == [
        "A line that wraps\nin the middle of a sentence.",
        "And a new\nsentence too.",
    ]


def test_list_items_start_new_sentences():
    text = (
        "Shopping list\n- milk\n* eggs and Mr. Bean's toast\n• jam\n"
        "1. first step\n2) second step\na) option a\n  (iv) roman four\n10. tenth. Ends here\n"
        "continued line"
    )
    assert split_sentences(text) == [
        "Shopping list",
        "- milk",
        "* eggs and Mr. Bean's toast",
        "• jam",
        "1. first step",
        "2) second step",
        "a) option a",
        "(iv) roman four",
        "10. tenth.",
        "Ends here\ncontinued line",
    ]


def test_list_marker_needs_a_space_and_a_line_start():
    text = "Temperatures fell to\n-5 degrees in\n2024.\nIt was cold."
    assert split_sentences(text) == ["Temperatures fell to\n-5 degrees in\n2024.", "It was cold."]


def test_cjk_full_stops():
    text = "这是第一句。这是第二句！真的吗？ The end."
    assert split_sentences(text) == ["这是第一句。", "这是第二句！", "真的吗？", "The end."]


def test_spans_index_into_the_text():
    text = "  First one.   Second\tone!\n\n\n  - third  \n"
    spans = check_spans(text)
    assert spans == [(2, 12), (15, 26), (31, 38)]
    assert [text[a:b] for a, b in spans] == ["First one.", "Second\tone!", "- third"]


def _sentence(rng: random.Random, i: int) -> str:
    subject = rng.choice(["Mr. Brown", "Dr. J. Watson", "The U.S. team", "Ana", "Prof. Li"])
    detail = rng.choice(
        [
            f"measured {i}.{rng.randint(0, 99)} units",
            f"read version {i}.{i % 7}.{i % 3}",
            "wrote to ops@example.org",
            "left at 5 p.m. sharp",
            f"saw Fig. {i} (e.g. the chart)",
            "said “maybe” twice",
        ]
    )
    end = rng.choice([".", "!", "?", "...", '."', ".)"])
    opener = {'."': '"', ".)": "("}.get(end, "")
    return f"{opener}{subject} {detail} in sentence {i}{end}"


def test_thousand_sentences_come_back_in_order():
    rng = random.Random(0)
    sentences = [_sentence(rng, i) for i in range(1000)]
    text = sentences[0]
    for sentence in sentences[1:]:
        text += rng.choice([" ", "  ", "\n", "\n\n", " \n\n\n "]) + sentence
    assert split_sentences(text) == sentences
    check_spans(text)


def test_span_invariants_on_random_text():
    rng = random.Random(1)
    pieces = ["word", "Word", "Mr.", "3.5", ". ", "? ", "!", "...", "\n", "\n\n", " ", "- ", "1. ",
              '"', ")", "(", "e.g.", "A.", "。", "\t", "x@y.z", "…"]  # fmt: skip
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        check_spans(text)


# segments


@pytest.mark.parametrize(
    "n_tokens, seg_len, stride",
    [(10, 0, 1), (10, 4, 0), (10, 4, 5), (10, 4, -1), (-1, 4, 2)],
)
def test_segment_starts_validates(n_tokens, seg_len, stride):
    with pytest.raises(ValueError):
        segment_starts(n_tokens, seg_len, stride)


def test_segment_starts_examples():
    assert segment_starts(0, 4, 2) == []
    assert segment_starts(1, 4, 2) == [0]
    assert segment_starts(4, 4, 2) == [0]
    assert segment_starts(5, 4, 2) == [0, 1]
    assert segment_starts(10, 4, 3) == [0, 3, 6]
    assert segment_starts(10, 4, 2) == [0, 2, 4, 6]
    assert segment_starts(11, 4, 4) == [0, 4, 7]
    assert segment_starts(12, 4, 4) == [0, 4, 8]
    assert segment_starts(7, 1, 1) == list(range(7))


def test_segment_starts_properties():
    for n in range(1, 70):
        for seg_len in range(1, 14):
            for stride in range(1, seg_len + 1):
                starts = segment_starts(n, seg_len, stride)
                assert starts[0] == 0
                assert min(starts[-1] + seg_len, n) == n  # the last window reaches the end
                if n >= seg_len:
                    assert starts[-1] + seg_len == n  # ... and is a full window ending there
                else:
                    assert starts == [0]
                steps = [b - a for a, b in pairwise(starts)]
                assert all(0 < step <= stride for step in steps)
                assert all(step == stride for step in steps[:-1])
                covered = set()
                for s in starts:
                    covered.update(range(s, min(s + seg_len, n)))
                assert covered == set(range(n))
                assert len(starts) == 1 + math.ceil(max(n - seg_len, 0) / stride)


def test_paper_segments_2048_768():
    n = 100_000
    starts = segment_starts(n, 2048, 768)
    assert starts[:4] == [0, 768, 1536, 2304]
    assert starts[-1] == n - 2048
    assert len(starts) == 1 + math.ceil((n - 2048) / 768) == 129
    overlap = 2048 - (starts[1] - starts[0])
    assert overlap / 2048 == 5 / 8
    seen = [0] * n
    for s in starts:
        for t in range(s, s + 2048):
            seen[t] += 1
    assert 2.6 < sum(seen) / n < 2.7  # "each token is seen about 2.7 times"
    # Away from the ends, every token is in 2 or 3 windows; the end-aligned last window adds
    # one more view near the end, and the first tokens are seen once.
    assert all(c in (2, 3) for c in seen[2048 : starts[-2]])
    assert seen[:768] == [1] * 768
    assert max(seen) == 4


def test_segments_token_exact():
    tokens = list(range(100, 110))
    assert segments(tokens, 4, 3) == [
        [100, 101, 102, 103],
        [103, 104, 105, 106],
        [106, 107, 108, 109],
    ]
    assert segments(tokens, 4, 4) == [
        [100, 101, 102, 103],
        [104, 105, 106, 107],
        [106, 107, 108, 109],
    ]
    assert segments(tokens, 16, 8) == [tokens]
    assert segments([], 16, 8) == []


def test_segments_cover_the_document_in_order():
    rng = random.Random(2)
    tokens = [rng.randrange(50_000) for _ in range(5000)]
    windows = segments(tokens, 512, 192)
    starts = segment_starts(len(tokens), 512, 192)
    assert [len(w) for w in windows] == [512] * len(starts)
    for s, window in zip(starts, windows):
        assert window == tokens[s : s + 512]
    assert windows[-1] == tokens[-512:]


# head_tail


def test_head_tail_fits_unchanged():
    tokens = [5, 6, 7]
    assert head_tail(tokens, 3, [0]) == [5, 6, 7]
    assert head_tail(tokens, 100, [0, 0]) == [5, 6, 7]
    assert head_tail([], 3, [0]) == []


def test_head_tail_exact_contents():
    tokens = list(range(20))
    assert head_tail(tokens, 9, [-1]) == [0, 1, 2, 3, -1, 16, 17, 18, 19]
    assert head_tail(tokens, 10, [-1, -2]) == [0, 1, 2, 3, -1, -2, 16, 17, 18, 19]
    # head gets round(9 * 0.25) = 2 tokens, the tail the other 7.
    assert head_tail(tokens, 11, [-1, -2], head_fraction=0.25) == [0, 1, -1, -2, *range(13, 20)]
    assert head_tail(tokens, 5, [], head_fraction=0.8) == [0, 1, 2, 3, 19]
    assert head_tail(tokens, 4, [-1], head_fraction=1.0) == [0, 1, 2, -1]
    assert head_tail(tokens, 4, [-1], head_fraction=0.0) == [-1, 17, 18, 19]
    # round() rounds halves to even: 5 * 0.5 = 2.5 -> 2.
    assert head_tail(tokens, 6, [-1]) == [0, 1, -1, 17, 18, 19]


def test_head_tail_length_is_the_budget():
    tokens = list(range(1000))
    separator = [-7, -8, -9]
    for budget in range(5, 1000, 37):
        for fraction in (0.0, 0.1, 0.5, 0.9, 1.0):
            out = head_tail(tokens, budget, separator, head_fraction=fraction)
            n_head = round((budget - 3) * fraction)
            n_tail = budget - 3 - n_head
            assert len(out) == budget
            assert out[:n_head] == tokens[:n_head]
            assert out[n_head : n_head + 3] == separator
            assert out[n_head + 3 :] == tokens[len(tokens) - n_tail :]


def test_head_tail_validates():
    with pytest.raises(ValueError, match="budget"):
        head_tail(list(range(10)), 2, [0])
    with pytest.raises(ValueError, match="budget"):
        head_tail([1], 3, [0, 0])
    with pytest.raises(ValueError, match="head_fraction"):
        head_tail(list(range(10)), 5, [0], head_fraction=1.5)
