from lift_mlx.config import SynthSettings
from lift_mlx.split import split_sentences
from lift_mlx.synthesize import (
    QAPair,
    SynthReport,
    filter_pairs,
    generate_qa,
    grounded,
    parse_qa,
    task_windows,
)

GOOD = '{"qa_list": [{"question": "Who chaired it first?", "answer": "Ada Korrin"}]}'


def test_parse_plain_fenced_and_surrounded_json():
    expected = [QAPair("Who chaired it first?", "Ada Korrin")]
    assert parse_qa(GOOD) == expected
    assert parse_qa(f"```json\n{GOOD}\n```") == expected
    assert parse_qa(f"Sure! Here are the pairs:\n{GOOD}\nHope this helps.") == expected
    assert parse_qa('[{"question": "Q?", "answer": "A"}]') == [QAPair("Q?", "A")]


def test_parse_recovers_complete_pairs_from_truncated_output():
    cut = ('{"qa_list": [{"question": "How many boats?", "answer": "seven"}, '
           '{"question": "Who owns the \\"lighthouse\\"?", "answer": "the town"}, '
           '{"question": "When were the limits add')
    assert parse_qa(cut) == [QAPair("How many boats?", "seven"),
                             QAPair('Who owns the "lighthouse"?', "the town")]


def test_parse_garbage_gives_nothing():
    for text in ["", "\n\n\n", "no json here", "{not: json}", '{"qa_list": "nope"}', "[1, 2]"]:
        assert parse_qa(text) == []


def test_filter_counts_empty_duplicate_and_ungrounded():
    window = "The cooperative keeps seven boats. The largest boat is the Grey Heron."
    pairs = [
        QAPair("How many boats?", "seven"),
        QAPair("how many  boats", "Seven boats"),  # same question, other spelling
        QAPair("", "seven"),
        QAPair("Who is the king?", "Olaf the Brave"),
        QAPair("Largest boat?", "the Grey Heron"),
    ]
    report = SynthReport()
    kept = filter_pairs(pairs, window, 0.5, set(), report)
    assert kept == [pairs[0], pairs[4]]
    assert report.dropped == {"duplicate": 1, "empty": 1, "ungrounded": 1}
    assert grounded("seven big boats", window, 0.5)  # 2 of 3 words occur
    assert not grounded("seven red ducks", window, 0.5)  # 1 of 3


def test_task_windows_cover_every_sentence_in_order(demo_text):
    windows = task_windows(demo_text, sentences_per_task=2, window_chars=300)
    sentences = split_sentences(demo_text)
    assert len(windows) == (len(sentences) + 1) // 2
    joined = " ".join(w.target for w in windows)
    assert joined.split() == " ".join(sentences).split()
    for w in windows:
        assert len(w.preceding) <= 300
        assert w.n_sentences in (1, 2)
    # each window's preceding text is what comes right before its target in the document
    w = windows[5]
    at = demo_text.index(w.target)
    assert demo_text[:at].rstrip().endswith(w.preceding)


def test_batched_generation_on_a_tiny_model(tiny_lm, demo_text):
    windows = task_windows(demo_text, 1, 200)[:6]
    settings = SynthSettings(batch_size=4, max_tokens=24)
    seen = []
    pairs, report = generate_qa(tiny_lm.model, tiny_lm.tokenizer, windows, settings,
                                on_batch=lambda done, total, toks: seen.append((done, total)))
    assert seen == [(4, 6), (6, 6)]  # two batches: 4 windows decoded together, then 2
    assert report.requests == 6
    assert 0 < report.generated_tokens <= 6 * 24
    # a random model writes no JSON: every request is counted as dropped, nothing crashes
    assert pairs == [] and report.kept == 0
    assert sum(report.dropped.values()) >= 6 - len(pairs)
