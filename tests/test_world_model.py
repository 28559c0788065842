from __future__ import annotations

import json
import math
import random

import pytest
from conftest import HELDOUT_QUESTIONS, TRAIN_QUESTIONS, question_pattern

from lift_mlx import prompts
from lift_mlx.answer import question_prompt
from lift_mlx.generator_styles import parse_qa
from lift_mlx.synthesize import task_windows
from lift_mlx.tiny import build_tiny_model, train_tokenizer
from lift_mlx.train import mean_nll
from lift_mlx.world import TEMPLATES
from lift_mlx.world_model import (
    KINDS,
    build_corpus,
    check_world_model,
    closed_book_samples,
    copy_nll,
    copy_sample,
    fresh_world,
    generator_samples,
    lr_at,
    reading_sample,
    tiny_settings,
    tokenizer_corpus,
    world_a,
)

SETTINGS = tiny_settings()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(tokenizer_corpus(SETTINGS), SETTINGS.vocab_size)


@pytest.fixture(scope="module")
def corpus(tok):
    return build_corpus(tok, SETTINGS)


def _split(sample) -> tuple[list[int], list[int]]:
    """(prompt, target) of a sample whose mask is 0...0 1...1."""
    n = len(sample) - sample.n_targets
    assert sample.mask == (0,) * n + (1,) * sample.n_targets
    return list(sample.tokens[:n]), list(sample.tokens[n:])


def _asked(tok, sample) -> list[str]:
    """The questions a sample asks or, for generator demonstrations, writes."""
    prompt, target = _split(sample)
    if sample.kind == "gen":
        return [p.question for p in parse_qa(tok.decode(target))]
    user = tok.decode(prompt).split("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
    return [user.split("Question: ")[-1]]


@pytest.mark.parametrize("mix", [None, {"doc": 0.1, "read": 0.4, "closed": 0.15, "gen": 0.15,
                                         "copy": 0.2}])
def test_corpus_fills_every_kind_in_proportion(tok, corpus, mix):
    settings = SETTINGS if mix is None else tiny_settings(mix=mix)
    corpus = corpus if mix is None else build_corpus(tok, settings)
    tokens = {k: sum(len(s) for s in corpus[k]) for k in KINDS}
    total = sum(tokens.values())
    for kind in KINDS:
        share = settings.mix.get(kind, 0.0)  # no share given: no samples
        assert tokens[kind] >= share * settings.train_tokens
        assert tokens[kind] / total == pytest.approx(share, abs=0.08)
        assert all(s.kind == kind for s in corpus[kind])
    assert (tokens["copy"] > 0) == (mix is not None)


def test_copy_samples_repeat_a_sequence_at_varied_distances():
    rng = random.Random(0)
    distances = set()
    for _ in range(50):
        s = copy_sample(rng, 512)
        n = s.n_targets + 1  # the repeat, its unscored first token included
        repeat = s.tokens[-n:]
        assert s.mask == (0,) * (len(s) - n + 1) + (1,) * (n - 1)
        assert 4 <= n <= 48 and all(3 <= t < 512 for t in s.tokens)
        first = [i for i in range(len(s) - 2 * n + 1) if s.tokens[i:i + n] == repeat]
        assert first  # the sequence occurs earlier, in full
        distances.add(len(s) - n - first[0])
    assert len(distances) > 30  # no fixed offset to learn instead of copying


def test_corpus_asks_train_phrasings_only(tok, corpus):
    asked = [q for kind in ("read", "closed", "gen") for s in corpus[kind] for q in _asked(tok, s)]
    assert len(asked) > 100
    for q in asked:
        assert any(p.fullmatch(q) for p in TRAIN_QUESTIONS), q
        assert not any(p.fullmatch(q) for p in HELDOUT_QUESTIONS), q
    # No held-out question about world A appears anywhere, not even inside a document.
    text = "\n".join(tok.decode(list(s.tokens)) for group in corpus.values() for s in group)
    for qa in world_a(SETTINGS).questions("heldout"):
        assert qa.question not in text


def test_loss_masks_cover_answers_only(tok, corpus):
    eos = "<|im_end|>"
    for s in corpus["doc"]:
        assert all(s.mask) and s.kind == "doc"
    world = world_a(SETTINGS)
    answers = {f.value for f in world.facts}
    for s in corpus["closed"]:
        _, target = _split(s)
        assert tok.decode(target).endswith(eos)
        assert tok.decode(target)[:-len(eos)] in answers
    for s in corpus["read"]:
        prompt, target = _split(s)
        assert tok.decode(target).endswith(eos) and eos not in tok.decode(target)[:-len(eos)]
        assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    for s in corpus["gen"]:
        _, target = _split(s)
        reply = tok.decode(target)
        assert reply.endswith(eos)
        pairs = json.loads(reply[:-len(eos)])["qa_list"]
        assert pairs and all(set(p) == {"question", "answer"} for p in pairs)


def test_closed_book_prompt_is_the_ask_prompt(tok):
    world = world_a(SETTINGS)
    samples = closed_book_samples(tok, world)
    qas = world.questions("train")
    assert len(samples) == len(qas)
    for s, qa in zip(samples, qas):
        prompt, target = _split(s)
        assert prompt == prompts.chat_ids(tok, prompts.question_body(tok, qa.question))
        assert prompt == question_prompt(tok, qa.question, None, SETTINGS.window, 16)
        assert target == prompts.encode(tok, qa.answer) + [tok.eos_token_id]


def test_reading_prompt_is_the_ask_prompt_and_holds_the_fact(tok):
    rng = random.Random(3)
    made = 0
    for _ in range(20):
        world = fresh_world(rng, SETTINGS)
        doc = prompts.encode(tok, world.document())
        sample = reading_sample(tok, world, doc, rng, SETTINGS, from_memory=False)
        if sample is None:
            continue
        made += 1
        prompt, target = _split(sample)
        question = _asked(tok, sample)[0]
        answer = tok.decode(target)[:-len("<|im_end|>")]
        # Exactly what `ask` builds: question_body with a head+tail view, in chat_ids.
        expected = question_prompt(tok, question, doc, SETTINGS.window,
                                   SETTINGS.answer_tokens[0])
        assert prompt == expected
        assert prompts.CONTEXT_HEADER in tok.decode(prompt)
        assert len(prompt) + SETTINGS.answer_tokens[0] <= SETTINGS.window
        # The fact asked about is in the view, so it can be read off.
        inside = world.fact_offsets(tok.decode(prompt))
        fact = next(f for f in world.facts if f.key in inside and f.value == answer
                    and any(question_pattern(t).fullmatch(question)
                            for t in TEMPLATES[f.kind][f.attribute][1]))
        assert fact.value in tok.decode(prompt)
    assert made >= 10


def test_generator_prompt_is_the_synthesize_prompt(tok):
    world = world_a(SETTINGS)
    rng = random.Random(0)
    samples = generator_samples(tok, world, 0, rng, SETTINGS)
    assert samples
    text = world.document(0)
    possible = set()
    for spt in SETTINGS.sentences_per_task:
        for w in task_windows(text, spt, SETTINGS.window_chars):
            for per in SETTINGS.qa_per_sentence:
                body = prompts.generator_body(tok, w.preceding, w.target, per * w.n_sentences)
                possible.add(tuple(prompts.chat_ids(tok, body)))
    values = {f.value for f in world.facts}
    for s in samples:
        prompt, target = _split(s)
        assert tuple(prompt) in possible
        pairs = parse_qa(tok.decode(target))
        assert pairs and all(p.answer in values and p.answer in tok.decode(prompt)
                             for p in pairs)


def test_lr_warms_up_then_decays():
    s = SETTINGS
    assert lr_at(0, 100, s) == pytest.approx(s.lr / s.warmup_steps)
    assert lr_at(s.warmup_steps, 100, s) == pytest.approx(s.lr)
    assert lr_at(100, 100, s) == pytest.approx(s.lr * s.min_lr_fraction)


@pytest.fixture(scope="module")
def trained(world_model):
    return world_model


def test_tiny_variant_trains_and_loss_drops(trained):
    _, report = trained
    assert report.steps > 20 and report.tokens >= SETTINGS.train_tokens
    assert report.parameters < 200_000
    # From ~log(vocab) = 6.2 at random initialisation to under 1/1.7 of it (measured: ~1/2).
    assert report.final_loss < report.first_loss / 1.7, report


def test_saved_model_loads_offline_with_its_training(trained, tok, tmp_path):
    import mlx_lm

    out, _ = trained
    model, tokenizer = mlx_lm.load(str(out))  # conftest sets HF_HUB_OFFLINE=1
    config = json.loads((out / "config.json").read_text())
    assert config["max_position_embeddings"] == SETTINGS.window
    held = closed_book_samples(tokenizer, world_a(SETTINGS))
    fresh = build_tiny_model(tmp_path / "untrained", tokenizer=tokenizer,
                             hidden_size=SETTINGS.hidden_size, num_layers=SETTINGS.num_layers,
                             num_heads=SETTINGS.num_heads,
                             intermediate_size=SETTINGS.intermediate_size,
                             max_position_embeddings=SETTINGS.window)
    untrained, _ = mlx_lm.load(str(fresh))
    pad = tokenizer.pad_token_id
    # The saved weights are the trained ones: world A's answers are far more likely under them.
    assert mean_nll(model, held, pad) < mean_nll(untrained, held, pad) / 2


def test_copy_nll_scores_the_second_copy_after_its_first_token(trained):
    import mlx_lm

    from lift_mlx.samples import Sample

    model, tokenizer = mlx_lm.load(str(trained[0]))
    vocab = len(tokenizer)
    got = copy_nll(model, vocab, random.Random(3), length=10, rows=4)
    rng = random.Random(3)
    seqs = [[rng.randrange(3, vocab) for _ in range(10)] * 2 for _ in range(4)]
    samples = [Sample(tuple(s), (0,) * 11 + (1,) * 9, "copy") for s in seqs]
    assert got == pytest.approx(mean_nll(model, samples, tokenizer.pad_token_id), rel=1e-4)


def test_check_reports_every_skill(trained):
    checks = check_world_model(trained[0], SETTINGS, n_questions=8, rng=random.Random(0))
    rates = [k for k in checks if k.startswith(("in_context_heldout", "closed_book",
                                                "generator_pa"))]
    assert len(rates) == 7
    # NaN only where the check had nothing to ask (no fact of world A in the tiny view).
    assert all(0.0 <= checks[k] <= 1.0 or math.isnan(checks[k]) for k in rates), checks
    assert not math.isnan(checks["in_context_heldout_one_sentence"] + checks["copy_nll"])
    assert checks["copy_nll_chance"] == pytest.approx(math.log(SETTINGS.vocab_size))
    assert 0.0 < checks["copy_nll"] < 3 * checks["copy_nll_chance"]
