import pytest

from lift_mlx.eval.datasets import Question
from lift_mlx.eval.metrics import (
    answer_contains,
    choice_accuracy,
    exact_match,
    keyword_match,
    normalize_answer,
    rouge_l,
    score,
    token_f1,
)


def test_normalize_answer_drops_case_punctuation_articles_and_extra_spaces():
    assert normalize_answer("  The Cat, sat   on A mat! ") == "cat sat on mat"
    assert normalize_answer("An apple\tand\nthe pear.") == "apple and pear"
    # Articles only as whole words: "theatre" and "another" keep their letters.
    assert normalize_answer("Theatre, another play") == "theatre another play"
    # Curly quotes and dashes count as punctuation too.
    assert normalize_answer("\u201cYes\u201d \u2014 maybe") == "yes maybe"


def test_token_f1_by_hand():
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down].
    # Common tokens: 2. Precision 2/2 = 1, recall 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8.
    assert token_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)


def test_token_f1_takes_the_best_reference_and_counts_repeats():
    assert token_f1("the cat sat", ["dog", "a cat sat down", "cat sat"]) == pytest.approx(1.0)
    # [cat, cat] vs [cat]: one shared token (counts are clipped). P 1/2, R 1, F1 2/3.
    assert token_f1("cat cat", ["cat"]) == pytest.approx(2 / 3)
    assert token_f1("nothing shared", ["cat sat"]) == 0.0
    assert token_f1("anything", []) == 0.0


def test_a_bare_string_reference_is_one_reference_not_a_list_of_characters():
    assert token_f1("cat", "cat") == 1.0
    assert exact_match("cat", "cat") == 1.0


def test_exact_match_after_normalization():
    assert exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel Tower in Paris", ["eiffel tower"]) == 0.0
    assert exact_match("Paris", ["London", "paris!"]) == 1.0


def test_rouge_l_by_hand():
    # pred  "police kill the gunman"  -> [police, kill, gunman]
    # ref   "police killed the gunman" -> [police, killed, gunman]
    # LCS = [police, gunman] = 2; P = 2/3, R = 2/3, F = 2/3.
    assert rouge_l("police kill the gunman", ["police killed the gunman"]) == pytest.approx(2 / 3)
    # Same bag of words in another order: unigram F1 is perfect, but the longest common
    # subsequence of [gunman, killed, police] and [police, killed, gunman] is one token:
    # P = R = 1/3, F = 1/3.
    assert token_f1("gunman killed police", ["police killed gunman"]) == pytest.approx(1.0)
    assert rouge_l("gunman killed police", ["police killed gunman"]) == pytest.approx(1 / 3)


def test_rouge_l_unequal_lengths_and_best_reference():
    # pred [a b c d] vs ref [a x c y d z] (letters stand in for words, no articles):
    # LCS = [a c d] = 3; P = 3/4, R = 3/6; F = 2 * 0.75 * 0.5 / 1.25 = 0.6.
    pred = "w1 w2 w3 w4"
    ref = "w1 x w3 y w4 z"
    assert rouge_l(pred, [ref]) == pytest.approx(0.6)
    assert rouge_l(pred, [ref, "w1 w2 w3 w4"]) == pytest.approx(1.0)
    assert rouge_l("", ["w1"]) == 0.0


def test_keyword_match_is_the_share_of_whole_keywords_found():
    answer = "The stew's secret is SMOKED cardamom, I believe."
    assert keyword_match(answer, ["smoked cardamom"]) == 1.0
    assert keyword_match(answer, ["smoked cardamom", "saffron"]) == 0.5
    assert keyword_match(answer, ["Cardamom", "believe", "pepper", "salt"]) == 0.5
    # Whole words only: "art" is not found inside "start".
    assert keyword_match("a fresh start", ["art"]) == 0.0
    assert keyword_match("anything", []) == 0.0


CHOICES = ["London", "Paris", "Rome", "Berlin"]


@pytest.mark.parametrize(
    "prediction, answer, expected",
    [
        ("B", "B", 1.0),
        ("The answer is (B).", "B", 1.0),
        ("Answer: C", "B", 0.0),
        ("B or C, probably B", "B", 1.0),  # the first letter named counts
        ("C or B", "B", 0.0),
        ("I think it is Paris.", "B", 1.0),  # the choice text counts as its letter
        ("I think it is paris.", "Paris", 1.0),  # gold given as text
        ("Rome, not Paris", "B", 0.0),
        ("A good guess would be Paris", "B", 1.0),  # the article "A" is not a letter
        ("A", "A", 1.0),
        ("ABC", "A", 0.0),  # not a standalone letter, and no choice text
        ("No idea.", "B", 0.0),
    ],
)
def test_choice_accuracy(prediction, answer, expected):
    assert choice_accuracy(prediction, answer, CHOICES) == expected


def test_choice_accuracy_prefers_the_longer_choice_at_the_same_place():
    choices = ["Paris", "Paris, Texas", "Austin", "Dallas"]
    assert choice_accuracy("Paris, Texas is right", "B", choices) == 1.0
    assert choice_accuracy("Paris, France", "A", choices) == 1.0


def test_choice_accuracy_without_choice_texts_compares_letters():
    assert choice_accuracy("It is D.", "D", []) == 1.0
    assert choice_accuracy("It is D.", "C", []) == 0.0


def test_score_applies_the_metrics_that_fit():
    plain = Question("q1", "Who?", ["Maud Ellery"])
    assert score("maud ellery", plain) == {"f1": 1.0, "em": 1.0, "contains": 1.0,
                                           "rouge_l": 1.0}

    needle = Question("q2", "What?", ["It is smoked cardamom."], keywords=["smoked cardamom"])
    s = score("Smoked cardamom.", needle)
    assert set(s) == {"f1", "em", "contains", "rouge_l", "keyword_match"}
    assert s["keyword_match"] == 1.0

    mc = Question("q3", "Which?", ["B"], choices=CHOICES)
    s = score("Paris", mc)
    assert s["accuracy"] == 1.0 and s["em"] == 0.0

    keywords_only = Question("q4", "What?", [], keywords=["heron"])
    assert score("a heron", keywords_only) == {"keyword_match": 1.0}


def test_answer_contains_looks_in_the_first_sentence_only():
    assert answer_contains("The tower has 142 steps.", ["142"]) == 1.0
    assert answer_contains("It was Tobias Wren, the first keeper.", ["tobias wren"]) == 1.0
    assert answer_contains("The keeper was Tom. Later came Tobias Wren.", ["Tobias Wren"]) == 0.0
    assert answer_contains("It costs 1420 pounds.", ["142"]) == 0.0  # whole words only
    assert answer_contains("", ["142"]) == 0.0 and answer_contains("142", [""]) == 0.0
    assert answer_contains("Four pounds!", "four pounds") == 1.0


@pytest.mark.parametrize("metric", [token_f1, exact_match, answer_contains, rouge_l,
                                    keyword_match])
def test_metrics_stay_in_unit_interval(metric):
    for pred, refs in [("", [""]), ("a", ["the"]), ("x y z", ["x"]), ("x", ["x y z"])]:
        assert 0.0 <= metric(pred, refs) <= 1.0
