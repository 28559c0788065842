import dataclasses
import json
import random

import mlx.core as mx
import pytest
from click.testing import CliRunner
from conftest import FAST

import lift_mlx.absorb as absorb_module
import lift_mlx.tasks.qa as qa_module
from lift_mlx import store
from lift_mlx.absorb import Absorbing, absorb
from lift_mlx.adapters import LORA, base_view
from lift_mlx.answer import stream_answer
from lift_mlx.cli import cli
from lift_mlx.config import TrainSettings
from lift_mlx.generator_styles import JSON, JsonEnd, QAPair
from lift_mlx.models import load_model
from lift_mlx.samples import (
    EpochScheduler,
    Sample,
    buckets_for,
    fitted_buckets,
    make_batch,
    plan_epoch,
)
from lift_mlx.train import TrainLoop


def _samples(n: int, rng: random.Random) -> list[Sample]:
    lengths = [rng.choice([20, 50, 100, 200]) for _ in range(n)]
    return [Sample(tuple(range(i, i + k)), (1,) * k, str(i)) for i, k in enumerate(lengths)]


@pytest.mark.parametrize("epochs", [1, 3])
def test_every_late_sample_is_trained_exactly_epochs_times(epochs):
    rng = random.Random(epochs)
    samples = _samples(57, rng)
    sched = EpochScheduler(4, epochs, buckets_for(200), random.Random(0))
    seen: dict[str, int] = {}
    arrivals = [samples[:11], samples[11:12], samples[12:30], [], samples[30:57]]
    for batch in arrivals:
        sched.add(batch)
        for _ in range(rng.randrange(0, 6)):  # a few steps between arrivals
            due = sched.next_batch(final=False)
            if due:
                assert len(due[1]) == 4  # no partial batch while samples may still come
                for s in due[1]:
                    seen[s.kind] = seen.get(s.kind, 0) + 1
    left, steps = sched.steps_left(), 0
    while due := sched.next_batch(final=True):
        steps += 1
        length, chunk = due
        assert len({s.kind for s in chunk}) == len(chunk)  # no sample twice in one batch
        assert all(len(s) - 1 <= length or length == 256 for s in chunk)
        for s in chunk:
            seen[s.kind] = seen.get(s.kind, 0) + 1
    assert seen == {s.kind: epochs for s in samples}
    assert sched.remaining == 0
    assert steps == left > 0  # the count the training bar ends at


def test_recite_samples_take_their_own_epoch_count_through_a_resume():
    rng = random.Random(3)
    lengths = [rng.choice([20, 50, 100, 200]) for _ in range(60)]
    samples = [Sample(tuple(range(i, i + k)), (1,) * k, "recite" if i % 3 == 0 else "qa")
               for i, k in enumerate(lengths)]
    owed = {s.tokens: 1 if s.kind == "recite" else 4 for s in samples}
    sched = EpochScheduler(4, 4, buckets_for(200), random.Random(0), {"recite": 1, "qa": 0})
    sched.add(samples[:25])
    seen: dict[tuple, int] = {}
    for _ in range(9):
        for s in sched.next_batch(final=False)[1]:
            seen[s.tokens] = seen.get(s.tokens, 0) + 1
    # what a checkpoint keeps, resumed by a new schedule, and the same in the old format
    kept = json.loads(json.dumps(sched.position()))
    resumed = EpochScheduler(4, 4, buckets_for(200), random.Random(1), {"recite": 1})
    resumed.resume(samples[:25], kept)
    assert resumed.position()["pending"] == kept["pending"]
    resumed.add(samples[25:])
    left, steps = resumed.steps_left(), 0
    while due := resumed.next_batch(final=True):
        steps += 1
        assert len({s.tokens for s in due[1]}) == len(due[1])
        for s in due[1]:
            seen[s.tokens] = seen.get(s.tokens, 0) + 1
    assert seen == owed
    assert resumed.remaining == 0 and steps == left > 0
    old = {**kept, "pending": [p[:3] for p in kept["pending"]]}  # no count per kind
    before = EpochScheduler(4, 4, buckets_for(200), random.Random(1))
    before.resume(samples[:25], old)
    assert before.remaining == 25 * 4 - 9 * 4
    assert {p[3] for p in before.position()["pending"]} == {4}  # each owed --epochs


def test_all_samples_at_once_take_no_more_steps_than_epoch_passes():
    samples = _samples(41, random.Random(5))
    buckets = buckets_for(200)
    sched = EpochScheduler(4, 3, buckets, random.Random(0))
    sched.add(samples)
    left, steps = sched.steps_left(), 0
    while sched.next_batch(final=True):
        steps += 1
    assert steps <= 3 * len(plan_epoch(samples, 4, buckets, random.Random(0)))
    assert steps == left


def test_fitted_buckets_fit_the_longest_samples_tightly():
    assert fitted_buckets(600) == [64, 128, 256, 512, 608]
    assert fitted_buckets(1024) == [64, 128, 256, 512, 1024]
    assert fitted_buckets(10) == [64]


def test_json_end_stops_at_the_close_of_the_first_object():
    out = 'Sure: {"qa_list": [{"question": "a } b?", "answer": "x \\" ]"}]} trailing {'
    end = JsonEnd()
    closed_at = next(i for i, ch in enumerate(out) if end.feed(ch))
    assert out[: closed_at + 1].endswith("]}")
    assert json.loads(out[out.index("{") : closed_at + 1])["qa_list"][0]["answer"] == 'x " ]'


def test_base_view_stays_the_base_while_the_adapter_trains(tiny_model_path, tiny_lm):
    prompt = mx.array([list(range(3, 40))])
    base = load_model(str(tiny_model_path)).model(prompt)
    view = base_view(tiny_lm.model)
    settings = TrainSettings(rank=4, lr=1e-2, grad_checkpoint=True, compile=False)
    LORA.attach(tiny_lm.model, settings)
    loop = TrainLoop(tiny_lm.model, settings)
    sample = Sample(tuple(range(3, 60)), (1,) * 57, "doc")
    for _ in range(3):
        loop(make_batch([sample], 4, 64, 0))
    loop.close()
    assert mx.array_equal(view(prompt), base).item()
    assert not mx.allclose(tiny_lm.model(prompt), base, atol=1e-4).item()


@pytest.fixture(scope="module")
def lively_path(tmp_path_factory):
    """The tiny model with its weights tripled: at the usual scale greedy decoding of a random
    model repeats one token, here it writes a different text for every request."""
    from lift_mlx.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("models") / "lively", seed=1)
    weights = mx.load(str(path / "model.safetensors"))
    mx.save_safetensors(str(path / "model.safetensors"), {k: 3 * v for k, v in weights.items()})
    return path


def _fake_parse(text: str, preceding: str, target: str, variant: int) -> list[QAPair]:
    """Every output becomes one pair that records it (the random model writes no JSON)."""
    return [QAPair(f"what was written {text!r}", "the")] if text.strip() else []


def _absorb_recording(doc, lm, monkeypatch, **kwargs):
    """Absorb with fake QA parsing; returns the result, the QA pairs and, per training step,
    whether generation had already finished."""
    streams, steps = [], []
    real_stream, real_call = qa_module.QAStream, TrainLoop.__call__

    class Recorded(real_stream):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            streams.append(self)

    def call(self, *args, **kw):
        steps.append(all(s.done for s in streams))
        return real_call(self, *args, **kw)

    with monkeypatch.context() as patch:
        fake = dataclasses.replace(JSON, parse=_fake_parse)
        for module in (absorb_module, qa_module):  # the adapter's key, the generator's prompts
            patch.setattr(module, "resolve_style", lambda name, model=None: fake)
        patch.setattr(qa_module, "QAStream", Recorded)
        patch.setattr(TrainLoop, "__call__", call)
        result = absorb(doc, lm, reuse=False, min_overlap=0.0, **kwargs)
    cache = next((store.home() / "qa-cache").iterdir())
    pairs = json.loads(cache.read_text())["qa_pairs"]
    cache.unlink()
    return result, pairs, steps


def test_pipeline_trains_while_generating_and_writes_the_same_qa_as_sequential(
        lively_path, tmp_path, demo_text, monkeypatch):
    lm = load_model(str(lively_path))
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:2500])
    settings = {**FAST, "epochs": 2, "max_tokens": 24, "grad_checkpoint": True}
    piped, piped_pairs, piped_steps = _absorb_recording(doc, lm, monkeypatch, pipeline=True,
                                                        **settings)
    seq, seq_pairs, seq_steps = _absorb_recording(doc, lm, monkeypatch, pipeline=False,
                                                  **settings)
    assert piped_pairs == seq_pairs and len(piped_pairs) > 5
    assert not piped_steps[0] and all(seq_steps)  # trained during generation / only after
    for r in (piped.report, seq.report):
        assert r.samples["qa"] == len(seq_pairs)
        assert r.train.sample_views == 2 * (r.samples["recite"] + r.samples["qa"])
    assert piped.report.pipeline and not seq.report.pipeline
    assert set(piped.report.seconds) >= {"split", "synthesize", "train", "save"}


def test_compiled_pipeline_traces_once_per_shape(lively_path, tmp_path, demo_text,
                                                  monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:2500])
    lm = load_model(str(lively_path))
    result, pairs, _ = _absorb_recording(doc, lm, monkeypatch, compile=True,
                                         **{**FAST, "epochs": 2, "max_tokens": 16})
    r = result.report
    assert r.train.steps >= 8 and r.samples["qa"] > 0
    assert r.train.traces <= 2  # one recite bucket and one QA bucket, whatever the steps


def test_now_answers_from_the_base_before_the_adapter_is_ready(tiny_model_path, tmp_path,
                                                               demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:3000])
    lm = load_model(str(tiny_model_path))
    fresh = load_model(str(tiny_model_path))
    absorbing = Absorbing(doc, lm, tasks=("recite",), **{**FAST, "epochs": 12})
    question = "Who owns the lighthouse?"
    ids = absorbing.prompt(question, max_tokens=8)
    answer = absorbing.ask(question, max_tokens=8)
    assert not absorbing.ready  # answered while training still runs
    assert answer == "".join(stream_answer(fresh.model, fresh.tokenizer, ids, 8))
    done = absorbing.wait()
    assert absorbing.ready and done.report.train.steps > 0
    assert absorbing.ask(question, max_tokens=8) == done.ask(question, max_tokens=8)


def test_cli_ask_now_answers_then_stores_the_adapter(tiny_model_path, tmp_path, demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    args = ["ask", str(doc), "Who?", "--now", "--model", str(tiny_model_path), "--tasks",
            "recite", "--seg-len", "128", "--stride", "64", "--rank", "4", "--epochs", "1",
            "--max-tokens", "4", "--sequential"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "adapter" in r.stderr and len(store.entry_dirs()) == 1
    r = CliRunner().invoke(cli, [a for a in args if a != "--now"])
    assert r.exit_code == 0 and "stored; no training needed" in r.stderr



@pytest.mark.parametrize("pipeline", [True, False])
def test_cached_qa_pairs_train_in_both_schedules(tiny_lm, tmp_path, demo_text, pipeline):
    from lift_mlx.config import preset
    from lift_mlx.ingest import read_document
    from lift_mlx.tasks.qa import cache_file as qa_cache_file

    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    settings = preset("default", **FAST)
    path = qa_cache_file(read_document(doc).sha256, tiny_lm, settings)
    pairs = [{"question": f"Question {i}?", "answer": "Ada Korrin"} for i in range(6)]
    store.write_atomic(path, json.dumps({"qa_pairs": pairs}))
    r = absorb(doc, tiny_lm, settings=settings, pipeline=pipeline).report
    assert r.synth.cached and r.samples["qa"] == 6
    assert r.train.sample_views == r.samples["recite"] + 6


def test_interrupted_generation_resumes_from_its_finished_requests(lively_path, tmp_path,
                                                                   demo_text, monkeypatch):
    """QA pairs are kept as each generator request finishes; an absorb interrupted during
    generation resumes there, makes only the requests still missing, and ends with the same
    pairs as a run never interrupted."""
    from lift_mlx.config import preset
    from lift_mlx.ingest import read_document
    from lift_mlx.progress import Progress
    from lift_mlx.prompts import encode
    from lift_mlx.samples import QASamples
    from lift_mlx.tasks import TaskInput
    from lift_mlx.tasks.qa import QAPairs, partial_file

    fake = dataclasses.replace(JSON, parse=_fake_parse)
    monkeypatch.setattr(qa_module, "resolve_style", lambda name, model=None: fake)
    lm = load_model(str(lively_path))
    doc_path = tmp_path / "doc.md"
    doc_path.write_text(demo_text[:1500])
    doc = read_document(doc_path)
    settings = preset("default", **{**FAST, "max_tokens": 16, "min_overlap": 0.0,
                                     "generator_batch_size": 2})  # requests end 2 at a time

    tokens = encode(lm.tokenizer, doc.text)

    def qa_samples():  # pairs -> samples without the document view
        return QASamples(lm.tokenizer, tokens, 0, 0.0, random.Random(0))

    def source():
        return QAPairs(TaskInput(doc, tokens, lm.tokenizer, settings, qa_samples(), lm,
                                 lm.model, Progress(quiet=True)))

    whole = source()
    whole.run()
    total, pairs = len(whole.stream.requests), list(whole.pairs)
    assert total > 4 and len(pairs) > 4
    whole.path.unlink()

    first = source()  # interrupted once 3 requests have finished
    while first.stream.finished < 3:
        first.step()
    left = partial_file(first.path)
    assert left.is_file() and not first.path.exists()
    kept = list(first.pairs)
    del first

    again = source()
    assert again.stream.finished == len(set(json.loads(left.read_text())["finished"])) >= 3
    assert again.take() == qa_samples()(kept)  # the finished requests' pairs train at once
    again.run()
    assert again.stream.report.requests == total
    assert sorted(again.pairs, key=str) == sorted(pairs, key=str)
    assert again.path.is_file() and not left.exists()
