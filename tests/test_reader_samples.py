"""Reader samples (--reader-share): QA and cloze samples with retrieved passages before the
question, laid out as `ask --retrieve` lays out its prompt, with the answer's passage (oracle)
or only distractors."""

import random

from lift_mlx import prompts
from lift_mlx.absorb import absorb
from lift_mlx.answer import passages_prompt
from lift_mlx.config import Settings
from lift_mlx.generator_styles import QAPair
from lift_mlx.retrieval import passage_index
from lift_mlx.samples import QASamples, Reader, qa_sample

TEXT = ("The harbour has two piers. The north pier was built in 1822 by Ada Korrin. "
        "Fishing boats land cod and herring there every morning. "
        "The lighthouse on Kestrel Point has 142 steps. A ticket to climb it costs four pounds. "
        "The museum keeps the old lamp and a logbook of storms. "
        "The ferry to Gull Island leaves at noon. Its captain is Mira Dunmore. "
        # sentences that match the questions below without answering them
        "The south pier was built later. The lighthouse on Kestrel Point has no keeper. "
        "A second ferry to Gull Island leaves at dusk. The museum has a small shop. ")
PAIRS = [QAPair("Who built the north pier?", "Ada Korrin"),
         QAPair("How many steps does the lighthouse on Kestrel Point have?", "142"),
         QAPair("Who is the captain of the ferry to Gull Island?", "Mira Dunmore"),
         QAPair("What does the museum keep besides a logbook?", "the old lamp")]


def _reader(tok, oracle: float, share: float = 1.0) -> Reader:
    return Reader(tok, passage_index(tok, TEXT, 12), share, oracle, 40)


def _prompt_text(tok, sample) -> str:
    prompt = [t for t, m in zip(sample.tokens, sample.mask) if not m]
    return tok.decode(prompt)


def test_an_oracle_sample_is_the_retrieve_prompt_with_its_answer(tiny_lm):
    tok = tiny_lm.tokenizer
    reader = _reader(tok, oracle=1.0)
    made = QASamples(tok, [], 0, 0.0, random.Random(0), reader)(PAIRS)
    for pair, sample in zip(PAIRS, made):
        # exactly the prompt `ask --retrieve` builds for the question, then the answer
        ids, held = passages_prompt(tok, pair.question, reader.index.ranked(pair.question), 40,
                                    window=1 << 20, max_tokens=0)
        if any(pair.answer.lower() in p.text.lower() for p in held):
            assert list(sample.tokens[:len(ids)]) == ids
        assert pair.answer in _prompt_text(tok, sample)  # the passage with the answer is in
        target = [t for t, m in zip(sample.tokens, sample.mask) if m]
        assert target == prompts.encode(tok, pair.answer) + [tok.eos_token_id]
        assert sample.kind == "qa"


def test_a_distractor_sample_holds_passages_without_the_answer(tiny_lm):
    tok = tiny_lm.tokenizer
    reader = _reader(tok, oracle=0.0)
    made = QASamples(tok, [], 0, 0.0, random.Random(0), reader)(PAIRS)
    longer = 0
    for pair, sample in zip(PAIRS, made):
        text = _prompt_text(tok, sample)
        assert pair.answer not in text and pair.question in text
        others = [p for p in reader.index.ranked(pair.question) if pair.answer not in p.text]
        bare = qa_sample(tok, pair.question, pair.answer)
        # the other passages that match are there; with none, the question alone
        assert (len(sample) > len(bare) + 5) == bool(others)
        longer += bool(others)
    assert longer >= 3


def test_the_share_picks_samples_and_no_reader_leaves_samples_as_they_were(tiny_lm):
    tok = tiny_lm.tokenizer
    pairs = PAIRS * 50
    half = QASamples(tok, [], 0, 0.0, random.Random(3), _reader(tok, 1.0, share=0.5))(pairs)
    bare_len = {p.question: len(qa_sample(tok, p.question, p.answer)) for p in PAIRS}
    with_passages = sum(len(s) > bare_len[p.question] for s, p in zip(half, pairs))
    assert 70 <= with_passages <= 130  # about half of 200
    rng = random.Random(3)
    plain = QASamples(tok, [], 0, 0.0, rng, None)(pairs)
    assert plain == [qa_sample(tok, p.question, p.answer) for p in pairs]
    assert rng.random() == random.Random(3).random()  # no draw was spent on them


def test_reader_settings_key_the_adapter_only_when_set(tiny_lm, tmp_path):
    assert Settings().keyed() == Settings().replace(reader_oracle=0.8).keyed()
    assert Settings().keyed() != Settings().replace(reader_share=0.5).keyed()
    doc = tmp_path / "harbour.md"
    doc.write_text(TEXT * 2)
    quick = dict(tasks=("recite", "cloze"), seg_len=64, stride=32, context_len=0, rank=2,
                 grad_checkpoint=False, epochs=1)
    plain = absorb(doc, tiny_lm, **quick)
    reading = absorb(doc, tiny_lm, **quick, reader_share=0.5, reader_len=40,
                     reader_passage_len=12)
    assert reading.adapter_path != plain.adapter_path
    # the reader samples are longer: more tokens trained for the same steps' samples
    assert reading.report.samples["cloze"] == plain.report.samples["cloze"]
    assert reading.report.train.tokens > plain.report.train.tokens
