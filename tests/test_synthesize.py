import dataclasses
import random

import pytest

from lift_mlx.config import SynthSettings
from lift_mlx.generator_styles import QAPair, parse_qa
from lift_mlx.split import split_sentences
from lift_mlx.synthesize import QAStream, SynthReport, filter_pairs, grounded, task_windows

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
        QAPair("What is the Grey Heron's size?", "the Grey Heron"),  # given away
    ]
    report = SynthReport()
    kept = filter_pairs(pairs, window, 0.5, set(), report)
    assert kept == [pairs[0], pairs[4]]
    assert report.dropped == {"duplicate": 1, "empty": 1, "ungrounded": 1,
                              "answer in question": 1}
    assert grounded("seven big boats", window, 0.5)  # 2 of 3 words occur
    assert not grounded("seven red ducks", window, 0.5)  # 1 of 3
    # function words do not ground an answer whose other words are all made up
    assert not grounded("the owl", window, 0.5) and not grounded("in 1827", window, 0.5)
    assert grounded("the largest", window, 0.5) and grounded("the", window, 0.5)


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


def generate_qa(model, tokenizer, windows, settings):
    """Every QA pair the generator writes about `windows`, and its report."""
    stream, pairs = QAStream(model, tokenizer, windows, settings), []
    while not stream.done:
        pairs += stream.step()
    return pairs, stream.close()


def test_batched_generation_on_a_tiny_model(tiny_lm, demo_text):
    windows = task_windows(demo_text, 1, 200)[:6]
    settings = SynthSettings(generator_batch_size=4, max_tokens=24, style="json")
    pairs, report = generate_qa(tiny_lm.model, tiny_lm.tokenizer, windows, settings)
    assert report.requests == 6
    assert 0 < report.generated_tokens <= 6 * 24
    # a random model writes no JSON: every request is counted as dropped, nothing crashes
    assert pairs == [] and report.kept == 0
    assert sum(report.dropped.values()) >= 6 - len(pairs)


def test_lines_style_prompt_parse_and_stop(tiny_lm):
    from lift_mlx.generator_styles import LINES, LINES_EXAMPLES, parse_lines

    tok = tiny_lm.tokenizer
    ids = LINES.prompt(tok, "", "The tower has 142 steps.", 2, 1)
    text = tok.decode(ids)
    assert text.endswith("Sentence: The tower has 142 steps.\nQuestion:")
    assert text.startswith(f"Sentence: {LINES_EXAMPLES[1][0]}")  # variant 1 rotates the examples
    assert LINES.prompt(tok, "", "The tower has 142 steps.", 2, 0) != ids
    out = " How many steps does the tower have?\nAnswer: 142\n\nSentence: Another one."
    assert parse_lines(out) == [QAPair("How many steps does the tower have?", "142")]
    assert parse_lines(" What?\n") == [] and parse_lines("") == []
    stop = LINES.stop()
    assert not stop(" How many?") and not stop("\nAnswer: 142") and stop("\n\n")
    assert LINES.requests("", "Any.", 3) == 3
    # A small model may go straight on to another pair: the answer's line ends the request.
    stop = LINES.stop()
    assert not stop(" How many?\nAnswer: 14") and stop("2\nQuestion: And?")
    stop = LINES.stop()
    assert not stop(" How many?") and stop("\nQuestion: And?")


@pytest.mark.parametrize("target, preceding, spans", [
    ("The mill at Harlow Green was built in 1765 by Josiah Pell.", "",
     ["Josiah Pell", "1765", "Harlow Green"]),
    ("In 1822, Drynind Neizour was born.", "", ["Drynind Neizour", "1822"]),
    ("The Bairinirk has a tonnage of 1,470.", "", ["1,470", "Bairinirk"]),
    # one capitalised word opening a sentence: a name only if it is capitalised inside a
    # sentence too
    ("Toureinwick has a population of 54620.", "", ["54620"]),
    ("Toureinwick has a population of 54620.", "Ships sail from Toureinwick.",
     ["54620", "Toureinwick"]),
    ("Toureinwick has a population of 54620.", "Toureinwick was founded in 1435.", ["54620"]),
    ("Little is written about Ada Korrin.", "Little is written about Tomas Vell.",
     ["Ada Korrin"]),
    ("Visitors often mention the smell of the sea.", "", []),
    ("The weather that year was unusually wet.", "", []),
])
def test_answer_spans_are_numbers_and_names(target, preceding, spans):
    from lift_mlx.text import answer_spans

    assert answer_spans(target, preceding) == spans


def test_answers_style_gives_the_answer_and_takes_the_question(tiny_lm):
    from lift_mlx.generator_styles import ANSWERS, LINES, parse_answers

    tok = tiny_lm.tokenizer
    target = "The tower at Carrow Point has 142 steps."
    first = tok.decode(ANSWERS.prompt(tok, "", target, 3, 0))
    assert first.endswith(f"Sentence: {target}\nAnswer: 142\nQuestion:")
    assert tok.decode(ANSWERS.prompt(tok, "", target, 3, 1)).endswith(
        "Answer: Carrow Point\nQuestion:")
    # past the spans, the model writes both, as in the lines style
    assert ANSWERS.prompt(tok, "", target, 3, 2) == LINES.prompt(tok, "", target, 3, 2)
    out = " How many steps does the tower at Carrow Point have?\n\nSentence: Another."
    assert parse_answers(out, "", target, 0) == [
        QAPair("How many steps does the tower at Carrow Point have?", "142")]
    assert parse_answers(" The tower is tall.\n", "", target, 0) == []  # not a question
    # The sentence names something besides the answer: a question that names none of it is
    # not about this sentence ("How many steps are there?" of any tower).
    assert parse_answers(" How many steps are there?\n", "", target, 0) == []
    assert parse_answers(" What is it?\nAnswer: a tower\n", "", target, 2) == [
        QAPair("What is it?", "a tower")]
    # Given one span, it asked for the other, naming the one given: the other is the answer.
    asked = " How many steps does the tower at Carrow Point have?\n"
    assert parse_answers(asked, "", target, 1) == [QAPair(asked.strip(), "142")]
    # ... but not where two other spans are left: it stays (and the filter drops it)
    three = "Ada Korrin kept the lamp at Carrow Point in 1919."
    assert parse_answers(" Who kept the lamp at Carrow Point?\n", "", three, 1) == [
        QAPair("Who kept the lamp at Carrow Point?", "Carrow Point")]


def test_about_style_names_the_subject_and_asks_for_what_the_sentence_tells(tiny_lm):
    from lift_mlx.generator_styles import ABOUT, parse_about
    from lift_mlx.text import subject_and_asks

    paragraph = "The Reidrys first took to the water in 1855. The Reidrys carries marble."
    target = "The Reidrys is captained by Thulath Shethoke."
    # the subject is the name its paragraph repeats, not the sentence's last name
    assert subject_and_asks(target, paragraph) == ("Reidrys", ["Thulath Shethoke", None])
    # ... and only its own paragraph counts
    other = "Gyham is a port. Gyham has a mayor. Gyham is old.\n\n" + paragraph
    assert subject_and_asks("The Reidrys sails from Gyham.", other)[0] == "Reidrys"
    assert subject_and_asks("Thulath Shethoke serves as mayor of Gyham.", "") == (
        "Thulath Shethoke", ["Gyham", None])  # a tie: the first in the sentence
    assert subject_and_asks("It was built in 1765.", "") == (None, ["1765"])
    assert subject_and_asks("The weather that year was unusually wet.", "") == (None, [])
    # one request per pair wanted, the asks in turn; none for a sentence with nothing to ask
    assert ABOUT.requests(paragraph, target, 3) == 3
    assert ABOUT.requests("", "The weather that year was unusually wet.", 2) == 0

    tok = tiny_lm.tokenizer
    given = tok.decode(ABOUT.prompt(tok, paragraph, target, 2, 0))
    # the answer it is given is blanked out of the sentence (and of the examples')
    assert given.endswith("Sentence: The Reidrys is captained by ___.\nAbout: Reidrys\n"
                          "Answer: Thulath Shethoke\nQuestion:")
    assert "built in ___ by the carpenter Josiah Pell.\nAbout: Harlow Green\nAnswer: 1765" in given
    free = tok.decode(ABOUT.prompt(tok, paragraph, target, 2, 1))
    assert free.endswith(f"Sentence: {target}\nAbout: Reidrys\nQuestion:")
    assert "\nAnswer: the accounts of the rowing club\n" in free  # the examples' own form
    again = tok.decode(ABOUT.prompt(tok, paragraph, target, 3, 2))  # the first ask once more,
    assert again.endswith("Answer: Thulath Shethoke\nQuestion:") and again != given  # reordered
    asked = " Who is the captain of the Reidrys?\n\nSentence: Another."
    assert parse_about(asked, paragraph, target, 0) == [
        QAPair("Who is the captain of the Reidrys?", "Thulath Shethoke")]
    # a question that does not name the subject is not kept: it is asked backwards
    assert parse_about(" Who commands a ship?\n", paragraph, target, 0) == []
    assert parse_about(" What is it?\n", paragraph, target, 0) == []
    wrote = " What does the Reidrys carry?\nAnswer: marble\n"
    assert parse_about(wrote, paragraph, "The Reidrys carries marble.", 0) == [
        QAPair("What does the Reidrys carry?", "marble")]
    assert parse_about(" What is carried?\nAnswer: marble\n", paragraph,
                       "The Reidrys carries marble.", 0) == []


def test_style_choice_and_cache_keys(tiny_lm):
    from lift_mlx.errors import LiftError
    from lift_mlx.generator_styles import JSON, LINES, resolve_style
    from lift_mlx.tasks.qa import cache_key

    assert resolve_style("auto", tiny_lm.model) is LINES  # a tiny model: worked examples
    assert resolve_style("json") is JSON and resolve_style("auto") is JSON
    with pytest.raises(LiftError, match="unknown generator style"):
        resolve_style("xml")
    settings = SynthSettings()
    keys = {cache_key("doc", "gen", settings, style) for style in (JSON, LINES)}
    edited = dataclasses.replace(LINES, wording=LINES.wording[:-1] + ("Sentence: {s}\nQ:",),
                                 version="lines-2")
    keys.add(cache_key("doc", "gen", settings, edited))
    assert len(keys) == 3  # the version keys the cache


# Each style's version beside a hash of its wording: a wording edited without a new version
# fails here (the version keys the cached pairs and the adapters, so it must change with it).
STYLE_WORDING = {
    "json": ("ebb9f0655b3473f3", "b907f426c4333465"),
    "lines": ("d8c48b9c662fae4b", "7684f31c5f9062a3"),
    "answers": ("132e31f798bef1a0", "7834d09517686b59"),
    "about": ("6a361cdbdfe273c0", "f0d3a76fdbbb6f06"),
}


def test_a_style_whose_wording_changed_has_a_new_version():
    import hashlib
    import json

    from lift_mlx.generator_styles import STYLES

    assert set(STYLES) == set(STYLE_WORDING)
    for name, style in STYLES.items():
        wording = hashlib.sha256(json.dumps(list(style.wording)).encode()).hexdigest()[:16]
        assert (style.version, wording) == STYLE_WORDING[name], (
            f"the {name} style changed: where its wording did, give it a new version; then "
            "record its version and wording hash here")


def test_lines_generation_on_a_tiny_model(tiny_lm, demo_text):
    windows = task_windows(demo_text, 1, 200)[:3]
    settings = SynthSettings(generator_batch_size=4, max_tokens=12, qa_per_sentence=2)
    pairs, report = generate_qa(tiny_lm.model, tiny_lm.tokenizer, windows, settings)
    assert report.requests == 6  # one request per wanted pair
    assert 0 < report.generated_tokens <= 6 * 12


def test_requests_that_open_alike_share_one_prefilled_prefix(tiny_lm):
    """The answers style mixes two prompt forms (an answer given, or past the spans the
    lines form): each form's examples are prefilled once, and the pairs are the same as
    when every request prefills its whole prompt."""
    from lift_mlx.generator_styles import ANSWERS

    text = " ".join(["The tower at Carrow Point has 142 steps.", "The boat was painted green.",
                     "Ada Korrin kept the lamp in 1919.", "Tomas Vell sold nets in Portwen."] * 3)
    windows = task_windows(text, 1, 200)
    settings = SynthSettings(generator_batch_size=4, max_tokens=6, qa_per_sentence=3,
                             min_overlap=0.0)

    def run(reuse):
        stream = QAStream(tiny_lm.model, tiny_lm.tokenizer, windows, settings, style=ANSWERS,
                          reuse_prefix=reuse)
        while not stream.done:
            stream.step()
        return stream.kept_by_request, stream.close().prompt_tokens

    shared, shared_tokens = run(True)
    whole, whole_tokens = run(False)
    assert shared == whole
    assert shared_tokens < 0.5 * whole_tokens


def test_verify_qa_keeps_only_pairs_the_generator_answers_back(tiny_lm):
    """Each kept pair's question is asked back with its sentence as the document; a random
    model's replies hold almost no answer, so (nearly) everything is dropped, counted, and
    the stream still finishes every request."""
    from lift_mlx.generator_styles import ANSWERS

    text = "The tower at Carrow Point has 142 steps. Ada Korrin kept the lamp in 1919."
    windows = task_windows(text, 1, 200)
    plain = SynthSettings(generator_batch_size=4, max_tokens=8, qa_per_sentence=2,
                          min_overlap=0.0)
    checked = dataclasses.replace(plain, verify_qa=True)

    from lift_mlx.text import answer_spans

    def every_output(output, preceding, target, variant):  # a random model writes no "?"
        return [QAPair(f"What comes after {output!r}?", answer_spans(target)[0])]

    style = dataclasses.replace(ANSWERS, parse=every_output)

    def run(settings):
        stream = QAStream(tiny_lm.model, tiny_lm.tokenizer, windows, settings, style=style)
        kept = []
        while not stream.done:
            kept += stream.step()
        return kept, stream.close(), stream

    before, report_before, _ = run(plain)
    after, report, stream = run(checked)
    assert before
    assert set(after) <= set(before)
    assert report.kept == len(after)
    assert report.dropped.get("not answered back", 0) == len(before) - len(after) > 0
    assert stream.done and sorted(stream.finished_ids) == list(range(len(stream.requests)))
    assert report.prompt_tokens > report_before.prompt_tokens  # the checks were prefilled


def test_verify_qa_keeps_a_pair_whose_answer_is_read_back(tiny_lm):
    """The check itself: a reply that holds the answer keeps the pair."""
    from lift_mlx.synthesize import QAStream, TaskWindow

    window = TaskWindow("", "The lamp room has a brass lamp.")
    settings = SynthSettings(verify_qa=True, max_tokens=4)
    stream = QAStream(tiny_lm.model, tiny_lm.tokenizer, [window], settings)
    pair = QAPair("What does the lamp room have?", "a brass lamp")
    stream._ask_back(0, window, [pair])
    (uid,) = [u for u, (r, _, _) in stream._checks.items() if r == 0]
    stream._tokens[uid] = tiny_lm.tokenizer.encode("It has a brass lamp.",
                                                    add_special_tokens=False)
    assert stream._checked(uid) == [pair]
    stream.close()


def test_cloze_pairs_ask_each_sentence_back_for_its_names_and_numbers():
    from lift_mlx.tasks.cloze import cloze_pairs

    text = ("The Reidrys first took to the water in 1855. The Reidrys displaces 510 tons. "
            "The Reidrys is captained by Thulath Shethoke. The weather that year was wet. "
            "The Reidrys first took to the water in 1855.\n\n"
            "Nouhei Trading employs Thulath Shethoke.")
    assert cloze_pairs(text, 600) == [
        QAPair("The Reidrys first took to the water in what year?", "1855"),
        QAPair("The Reidrys displaces how many tons?", "510"),
        QAPair("The Reidrys is captained by what?", "Thulath Shethoke"),
        # (the repeated sentence asks nothing new; the filler sentence nothing at all)
        QAPair("Who employs Thulath Shethoke?", "Nouhei Trading"),
    ]


def test_cloze_pairs_ask_a_named_subject_for_the_word_its_sentence_ends_on():
    from lift_mlx.tasks.cloze import cloze_pairs

    text = ("Orla Vell works as a tanner. The Reidrys carries salt. The Reidrys displaces 510 "
            "tons. Tobias Wren kept the light for twenty-six years. The weather was wet. "
            "Orla Vell lives in Harlow.")
    assert cloze_pairs(text, 600) == [
        QAPair("Orla Vell works as a what?", "tanner"),
        QAPair("The Reidrys carries what?", "salt"),
        # a counted word is not what is told ("510 tons", "twenty-six years"); no subject,
        # no ask ("The weather was wet."); a name at the end is asked once, as a name
        QAPair("The Reidrys displaces how many tons?", "510"),
        QAPair("Orla Vell lives in what?", "Harlow"),
    ]


def test_cloze_phrasings_ask_each_fact_again_with_the_question_word_first_or_as_a_blank():
    from lift_mlx.tasks.cloze import cloze_pairs

    text = ("The Reidrys is captained by Thulath Shethoke. Orla Vell works as a tanner. "
            "The Reidrys carries 510 tons. Nouhei Trading employs Orla Vell.")
    assert cloze_pairs(text, 600, 1) == [
        QAPair("The Reidrys is captained by what?", "Thulath Shethoke"),
        QAPair("Orla Vell works as a what?", "tanner"),
        QAPair("The Reidrys carries how many tons?", "510"),
        QAPair("Who employs Orla Vell?", "Nouhei Trading"),
    ]
    assert cloze_pairs(text, 600, 2) == [
        QAPair("The Reidrys is captained by what?", "Thulath Shethoke"),
        # an auxiliary after a short subject goes before it
        QAPair("What is the Reidrys captained by?", "Thulath Shethoke"),
        QAPair("Orla Vell works as a what?", "tanner"),
        # a verb in -s after a name takes "does" (the article before the answer goes)
        QAPair("What does Orla Vell work as?", "tanner"),
        QAPair("The Reidrys carries how many tons?", "510"),
        # "how many" takes the word it counts along; "carries" -> "carry"
        QAPair("How many tons does the Reidrys carry?", "510"),
        QAPair("Who employs Orla Vell?", "Nouhei Trading"),
        # a sentence that opens with its answer cannot be turned: a blank instead
        QAPair("Fill in the blank: ___ employs Orla Vell.", "Nouhei Trading"),
    ]
    three = cloze_pairs(text, 600, 3)
    assert three[:3] == [
        QAPair("The Reidrys is captained by what?", "Thulath Shethoke"),
        QAPair("What is the Reidrys captained by?", "Thulath Shethoke"),
        QAPair("Fill in the blank: The Reidrys is captained by ___.", "Thulath Shethoke"),
    ]
    assert len(three) == 11  # every fact three ways but the last, which has no fronted form


def test_the_cloze_task_trains_each_phrasing_as_a_sample_of_its_own(tiny_lm, tmp_path):
    from lift_mlx.config import preset
    from lift_mlx.ingest import read_document
    from lift_mlx.progress import Progress
    from lift_mlx.prompts import encode
    from lift_mlx.samples import QASamples
    from lift_mlx.tasks import TASKS, TaskInput

    path = tmp_path / "doc.txt"
    path.write_text("The Reidrys is captained by Thulath Shethoke. Orla Vell works as a tanner.")
    doc = read_document(path)
    tokens = encode(tiny_lm.tokenizer, doc.text)

    def questions(phrasings: int) -> list[str]:
        settings = preset("default", tasks=["recite", "cloze"], cloze_phrasings=phrasings)
        given = TaskInput(doc, tokens, tiny_lm.tokenizer, settings,
                          QASamples(tiny_lm.tokenizer, tokens, 0, 0.0, random.Random(0)),
                          tiny_lm, tiny_lm.model, Progress(quiet=True))
        samples = TASKS["cloze"].samples(given)
        assert all(s.kind == "qa" for s in samples)
        return [tiny_lm.tokenizer.decode(list(s.tokens)) for s in samples]

    one, two = questions(1), questions(2)
    assert len(one) == 2 and len(two) == 4
    assert not any("What is the Reidrys captained by?" in q for q in one)
    assert sum("What is the Reidrys captained by?" in q for q in two) == 1
    assert sum("What does Orla Vell work as?" in q for q in two) == 1


def test_a_question_is_turned_around_only_where_its_subject_is_short_and_plain():
    from lift_mlx.tasks.cloze import fronted_question

    assert fronted_question("Dravein Foutaidraind was born in 1786.", "1786") \
        == "What year was Dravein Foutaidraind born in?"
    assert fronted_question("Zourailby lies on the river Wukri.", "Wukri") \
        == "What does Zourailby lie on the river?"
    assert fronted_question("The Reidrys goes to Harlow.", "Harlow") \
        == "What does the Reidrys go to?"
    # a clause, a list, punctuation or a long subject before the answer: no question
    assert fronted_question("If the Program does not specify a version of the License, "
                            "you may choose any.", "License") is None
    assert fronted_question("-c, --create Create a new archive.", "archive") is None
    assert fronted_question("The old grey stone house by the mill is owned by Orla Vell.",
                            "Orla Vell") is None
    assert fronted_question("Orla Vell works as a tanner.", "Orla Vell") is None  # opens it
    assert fronted_question("The shops sells salt from Harlow.", "Harlow") is None  # no name
    assert fronted_question("Orla Vell was a tanner.", "Harlow") is None  # not in it


def test_phrase_pairs_ask_each_sentence_for_a_quoted_term_a_literal_or_its_rarest_phrase():
    from lift_mlx.tasks.phrases import phrase_pairs

    text = ('A "covered work" means the unmodified Program. '
            "Use --ignore-zeros to read past a zeroed block, as noted in /etc/tar.conf. "
            "Every program is threatened constantly by software patents. "
            "The program is the program. "
            "Orla Vell works as a tanner. "
            "See http://example.org/guide/index.html for the program.")
    assert phrase_pairs(text, 600) == [
        QAPair('A "what" means the unmodified Program?', "covered work"),  # quoted first
        # a literal (an option here, before the path), not the rare words around it
        QAPair("Use what to read past a zeroed block, as noted in /etc/tar.conf?",
               "--ignore-zeros"),
        # the rarest word ("threatened", "constantly", "software", "patents": once each),
        # the last of equals, with the lower-case words beside it
        QAPair("Every program is threatened constantly by what?", "software patents"),
        # "The program is the program.": no rare word; "tanner" is cloze's; the address
        # gives no phrase, and "program" is no rare word
    ]
