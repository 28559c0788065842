import io
import json

import mlx.core as mx
import mlx_lm
import pytest
from conftest import FAST

from lift_mlx import store
from lift_mlx.absorb import absorb, stored_adapter
from lift_mlx.absorbed import load_absorbed, reset_adapter
from lift_mlx.config import preset
from lift_mlx.errors import LiftError
from lift_mlx.ingest import read_document
from lift_mlx.models import load_model
from lift_mlx.progress import Progress
from lift_mlx.tasks.qa import cache_file as qa_cache_file


def test_adapter_loads_in_plain_mlx_lm_with_identical_logits(tiny_model_path, tiny_lm, tmp_path,
                                                             demo_text):
    doc = tmp_path / "doc.txt"
    doc.write_text(demo_text[:3000])
    absorbed = absorb(doc, tiny_lm, tasks=("recite",), out=tmp_path / "adapter", **FAST)
    for name in ("adapters.safetensors", "adapter_config.json", "lift_meta.json"):
        assert (tmp_path / "adapter" / name).is_file()
    prompt = mx.array([absorbed.prompt("Who was the first chair?")])
    ours = absorbed.lm.model(prompt)
    model, _ = mlx_lm.load(str(tiny_model_path), adapter_path=str(tmp_path / "adapter"))
    theirs = model(prompt)
    assert mx.allclose(ours, theirs, atol=1e-5).item()
    base, _ = mlx_lm.load(str(tiny_model_path))
    assert not mx.allclose(base(prompt), ours, atol=1e-3).item()  # the adapter does something


def test_absorb_trains_with_the_driver_the_tests_and_benches_call(tiny_lm, tiny_model_path,
                                                                   tmp_path, demo_text):
    """absorb's training is `train.train`'s: the same samples and settings given to it
    directly give the same losses, step for step."""
    import random

    from lift_mlx.adapters import LORA
    from lift_mlx.config import Settings
    from lift_mlx.prompts import encode
    from lift_mlx.samples import recite_samples
    from lift_mlx.train import train

    doc = tmp_path / "doc.txt"
    doc.write_text(demo_text[:3000])
    absorbed = absorb(doc, tiny_lm, tasks=("recite",), **{**FAST, "epochs": 2})
    s = Settings.from_dict(absorbed.meta["settings"])
    lm = load_model(str(tiny_model_path))
    tok = lm.tokenizer
    recite = recite_samples(tok, encode(tok, doc.read_text()), s.split.seg_len, s.split.stride,
                            s.split.context_len, random.Random(s.train.seed))
    LORA.attach(lm.model, s.train)
    direct = train(lm.model, recite, s.train, tok.pad_token_id)
    assert absorbed.report.train.steps == direct.steps > 4
    assert absorbed.report.train.losses == pytest.approx(direct.losses, rel=1e-5)


def test_qa_views_train_a_share_of_the_cloze_samples_with_the_document_view(
        tiny_lm, tiny_model_path, tmp_path, demo_text):
    """--qa-context-len/--qa-context-share: the cloze samples absorb trains on are the recite
    samples and QASamples' (a seeded share with the head+tail view), step for step; the view
    makes them longer, so the trained tokens grow."""
    import random

    from lift_mlx.adapters import LORA
    from lift_mlx.config import Settings
    from lift_mlx.prompts import encode
    from lift_mlx.samples import QASamples, recite_samples
    from lift_mlx.tasks.cloze import cloze_pairs
    from lift_mlx.train import train

    doc = tmp_path / "doc.txt"
    doc.write_text(demo_text[:3000])
    opts = {**FAST, "tasks": ("recite", "cloze")}
    plain = absorb(doc, tiny_lm, **opts)
    viewed = absorb(doc, tiny_lm, **opts, qa_context_len=96, qa_context_share=0.5)
    assert viewed.adapter_path != plain.adapter_path
    assert viewed.report.train.tokens > plain.report.train.tokens
    s = Settings.from_dict(viewed.meta["settings"])
    lm = load_model(str(tiny_model_path))
    tok = lm.tokenizer
    ids = encode(tok, doc.read_text())
    samples = recite_samples(tok, ids, s.split.seg_len, s.split.stride, s.split.context_len,
                             random.Random(s.train.seed))
    make_qa = QASamples(tok, ids, 96, 0.5, random.Random(s.train.seed + 1))
    samples += make_qa(cloze_pairs(doc.read_text(), s.synth.window_chars))
    LORA.attach(lm.model, s.train)
    direct = train(lm.model, samples, s.train, tok.pad_token_id)
    assert viewed.report.train.losses == pytest.approx(direct.losses, rel=1e-5)


def test_stored_adapter_is_reused_without_training(tiny_lm, tmp_path, demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:2000])
    first = absorb(doc, tiny_lm, tasks=("recite",), **FAST)
    assert not first.report.reused and first.report.train.steps > 0
    assert first.adapter_path.parent == store.adapters_dir()
    again = absorb(doc, tiny_lm, tasks=("recite",), **FAST)
    assert again.report.reused and again.report.train.steps == 0
    assert again.adapter_path == first.adapter_path
    prompt = first.prompt("Who?")
    assert mx.allclose(again.lm.model(mx.array([prompt])),
                       load_absorbed(first.adapter_path, tiny_lm).lm.model(mx.array([prompt])))
    other = absorb(doc, tiny_lm, tasks=("recite",), **{**FAST, "rank": 5})  # other settings
    assert not other.report.reused and other.adapter_path != first.adapter_path


def test_the_stored_adapter_of_a_document_is_found_without_absorbing(tiny_lm, tmp_path,
                                                                    demo_text):
    """What `ask` answers with on a model that absorbs nothing to answer: the adapter an
    absorb with the same settings stored, and none for other settings, another text, or a
    damaged entry."""
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:2000])
    assert stored_adapter(read_document(doc), tiny_lm, tasks=("recite",), **FAST) is None
    made = absorb(doc, tiny_lm, tasks=("recite",), **FAST)
    found = stored_adapter(read_document(doc), tiny_lm, tasks=("recite",), **FAST)
    assert found == made.adapter_path
    # a generator is no part of the key where no QA task is trained (as absorb keys it)
    assert stored_adapter(read_document(doc), tiny_lm, generator=tiny_lm, tasks=("recite",),
                          **FAST) == made.adapter_path
    assert stored_adapter(read_document(doc), tiny_lm, tasks=("recite",),
                          **{**FAST, "rank": 5}) is None  # other settings: another adapter
    doc.write_text(demo_text[:1999])
    assert stored_adapter(read_document(doc), tiny_lm, tasks=("recite",), **FAST) is None
    doc.write_text(demo_text[:2000])
    weights = made.adapter_path / "adapters.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # damaged: absorbing again replaces it
    assert stored_adapter(read_document(doc), tiny_lm, tasks=("recite",), **FAST) is None


def test_qa_pairs_from_the_cache_become_training_samples(tiny_lm, tmp_path, demo_text):
    from lift_mlx.ingest import read_document

    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    settings = preset("default", tasks=("recite", "qa"), **FAST)
    path = qa_cache_file(read_document(doc).sha256, tiny_lm, settings)
    pairs = [{"question": "Who was the first chair?", "answer": "Ada Korrin"},
             {"question": "When was the charter adopted?", "answer": "14 March 1921"}]
    store.write_atomic(path, json.dumps({"qa_pairs": pairs}))
    absorbed = absorb(doc, tiny_lm, settings=settings)
    assert absorbed.report.synth.cached and absorbed.report.samples["qa"] == 2
    assert absorbed.meta["report"]["qa_samples"] == 2


def test_cloze_tasks_train_without_any_generation(tiny_lm, tmp_path, demo_text):
    """`--tasks recite,cloze`: the cloze pairs are QA samples in the prompt `ask` uses,
    trained from the first step, and no generator request is made."""
    from lift_mlx.ingest import read_document
    from lift_mlx.tasks.cloze import cloze_pairs

    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    settings = preset("default", tasks=("recite", "cloze"), **FAST)
    absorbed = absorb(doc, tiny_lm, settings=settings)
    pairs = cloze_pairs(read_document(doc).text, settings.synth.window_chars)
    assert absorbed.report.samples["cloze"] == len(pairs) > 3
    assert absorbed.report.synth.requests == 0 and absorbed.report.samples["qa"] == 0
    trained = absorbed.report.train.sample_views  # every sample, every epoch
    assert trained == (absorbed.report.samples["recite"] + len(pairs)) * settings.train.epochs
    assert not qa_cache_file(read_document(doc).sha256, tiny_lm, settings).exists()


def test_an_adapter_trained_without_a_system_prompt_answers_without_it(tiny_lm, tmp_path,
                                                                      demo_text):
    """--system-prompt none: every training sample and the adapter's answer prompts (after a
    reload from the store too) carry an empty system message; the plain base, answering a
    general question, keeps the template's own prompt."""
    from lift_mlx import prompts
    from lift_mlx.answer import stream_answer
    from lift_mlx.samples import qa_sample

    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    runs = {name: absorb(doc, tiny_lm, tasks=("recite", "cloze"), system_prompt=name,
                         out=tmp_path / name, **FAST) for name in ("model", "none")}
    tok = tiny_lm.tokenizer
    block = len(prompts.encode(tok, "<|im_start|>system\n<|im_end|>\n"))
    views = runs["none"].report.train.sample_views
    assert views == runs["model"].report.train.sample_views > 3
    # tiny's template has no system message of its own: "none" adds an empty one to each
    assert runs["none"].report.train.tokens - runs["model"].report.train.tokens == views * block
    question = "Who owns the lighthouse?"
    trained = qa_sample(prompts.prompt_tokenizer(tok, "none"), question, "x")
    for absorbed in (runs["none"], load_absorbed(tmp_path / "none", tiny_lm)):
        prompt = absorbed.prompt(question, context=False)
        assert list(trained.tokens[:len(prompt)]) == prompt
        assert tok.decode(prompt).startswith("<|im_start|>system\n<|im_end|>")
    general = "What is the capital of France?"
    reset = load_absorbed(tmp_path / "none", tiny_lm)
    assert not reset.uses_adapter(general)
    plain = prompts.chat_ids(tok, prompts.question_body(tok, general))
    routed = reset.ask(general, max_tokens=8)
    reset_adapter(tiny_lm)
    assert routed == "".join(stream_answer(tiny_lm.model, tok, plain, 8))
    bare = prompts.chat_ids(prompts.prompt_tokenizer(tok, "none"),
                            prompts.question_body(tok, general))
    assert routed != "".join(stream_answer(tiny_lm.model, tok, bare, 8))  # it would show


def test_generator_without_usable_output_warns_and_trains_on_recite(tiny_lm, tmp_path,
                                                                    demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1200])
    err = io.StringIO()
    absorbed = absorb(doc, tiny_lm, tasks=("recite", "qa"), progress=Progress(stream=err),
                      **{**FAST, "qa_per_sentence": 1})
    assert absorbed.report.samples["qa"] == 0
    assert absorbed.report.synth.requests > 0
    assert "no usable question/answer pairs" in err.getvalue()
    assert absorbed.report.train.steps > 0 and store.is_adapter_dir(absorbed.adapter_path)
    with pytest.raises(LiftError, match="nothing to train on"):
        absorb(doc, tiny_lm, tasks=("qa",), **FAST)


class _Tty(io.StringIO):
    def isatty(self):
        return True


class _InterruptAt(Progress):
    """Progress bars whose second training update is a Ctrl-C."""

    def bar(self, label, total, unit="tok"):
        outer = super().bar(label, total, unit)

        class Wrapped:
            def __enter__(s):
                update = outer.__enter__()

                def interrupting(done, units=0, note="", total=None):
                    if label == "train" and done == 2:
                        raise KeyboardInterrupt
                    update(done, units, note, total)

                return interrupting

            def __exit__(s, *exc):
                return outer.__exit__(*exc)

        return Wrapped()


def test_interrupted_absorb_leaves_nothing_that_looks_complete(tiny_lm, tmp_path, demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:3000])
    with pytest.raises(KeyboardInterrupt):
        absorb(doc, tiny_lm, tasks=("recite",), progress=_InterruptAt(stream=_Tty()), **FAST)
    root = store.adapters_dir()
    assert not root.exists() or store.entry_dirs() == []


def test_interrupted_save_keeps_the_previous_adapter(tiny_lm, tmp_path, demo_text, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:2000])
    out = tmp_path / "adapter"
    absorb(doc, tiny_lm, tasks=("recite",), out=out, **FAST)
    before = (out / "adapters.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.json, "dumps", broken)  # dies while writing the metadata
    with pytest.raises(KeyboardInterrupt):
        absorb(doc, tiny_lm, tasks=("recite",), out=out, reuse=False, **{**FAST, "seed": 1})
    monkeypatch.undo()
    assert (out / "adapters.safetensors").read_bytes() == before
    assert store.is_adapter_dir(out)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_adapter_of_another_base_model_is_refused(tiny_lm, other_model_path, tmp_path,
                                                  demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    absorbed = absorb(doc, tiny_lm, tasks=("recite",), **FAST)
    other = load_model(str(other_model_path))
    with pytest.raises(LiftError, match="was made for base model"):
        load_absorbed(absorbed.adapter_path, other)


def test_not_an_adapter_directory(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hi")
    with pytest.raises(LiftError, match="is not a lift-mlx adapter"):
        load_absorbed(tmp_path / "x")
    with pytest.raises(LiftError, match="no such adapter"):
        load_absorbed(tmp_path / "missing")


def test_short_document_trains_on_one_short_segment(tiny_lm, tmp_path):
    doc = tmp_path / "short.txt"
    doc.write_text("The boathouse is at the north end of the harbour.")
    absorbed = absorb(doc, tiny_lm, tasks=("recite",), **FAST)
    assert absorbed.report.segments == 1 and absorbed.report.samples["recite"] == 1
    assert absorbed.report.train.steps == 1


def test_answers_stream_and_are_greedy_by_default(tiny_lm, tmp_path, demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text)
    absorbed = absorb(doc, tiny_lm, tasks=("recite",), **FAST)
    pieces = list(absorbed.stream("Who owns the lighthouse?", max_tokens=12))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == absorbed.ask("Who owns the lighthouse?", max_tokens=12)
    bare = absorbed.prompt("Who owns the lighthouse?", context=False)
    full = absorbed.prompt("Who owns the lighthouse?", max_tokens=100)
    assert len(bare) < len(full) <= tiny_lm.window - 100


def test_general_questions_go_to_the_plain_base_and_document_questions_to_the_adapter(
        tiny_lm, tmp_path, demo_text):
    from lift_mlx.absorbed import reset_adapter
    from lift_mlx.answer import question_prompt, stream_answer

    doc = tmp_path / "doc.md"
    doc.write_text(demo_text)
    absorbed = absorb(doc, tiny_lm, tasks=("recite",), lr=1e-2, **FAST)
    general, about = "What is the capital of France?", "Who owns the lighthouse?"
    assert not absorbed.uses_adapter(general) and absorbed.uses_adapter(about)
    routed = {q: absorbed.ask(q, max_tokens=12) for q in (general, about)}
    adapted = {q: absorbed.ask(q, max_tokens=12, route=False) for q in (general, about)}
    reset_adapter(tiny_lm)  # the plain base, for comparison
    plain = {q: "".join(stream_answer(tiny_lm.model, tiny_lm.tokenizer, question_prompt(
        tiny_lm.tokenizer, q, None, tiny_lm.window, 12), 12)) for q in (general, about)}
    assert routed[general] == plain[general] != adapted[general]
    assert routed[about] == adapted[about]


def test_a_models_recommended_settings_apply_under_the_preset_and_options(tmp_path,
                                                                          demo_text):
    """models/presets.json's settings for an alias are used wherever the alias is: a named
    preset goes over them and the user's options over both; info says where each came from."""
    from click.testing import CliRunner

    from lift_mlx.cli import cli
    from lift_mlx.models import load_model
    from lift_mlx.presets import recommended_settings

    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1200])
    tiny = recommended_settings("tiny")
    assert tiny["rank"] == 8 and tiny["lr"] == 1e-3
    lm = load_model("tiny")
    one = absorb(doc, lm, tasks=("recite",), epochs=1, grad_checkpoint=False)
    train, split = one.meta["settings"]["train"], one.meta["settings"]["split"]
    assert (train["rank"], train["lr"], split["seg_len"]) == (8, 1e-3, tiny["seg_len"])
    assert one.meta["settings_from"]["rank"] == "model"
    two = absorb(doc, lm, preset_name="fast", tasks=("recite",), rank=4,
                 grad_checkpoint=False)
    train = two.meta["settings"]["train"]
    assert (train["rank"], train["lr"], train["epochs"]) == (4, 3e-4, 1)  # option, preset
    assert two.meta["settings"]["split"]["seg_len"] == tiny["seg_len"]  # still the model's
    sources = two.meta["settings_from"]
    assert (sources["rank"], sources["lr"], sources["seg_len"]) == ("option", "preset fast",
                                                                    "model")
    out = CliRunner().invoke(cli, ["info", str(two.adapter_path)]).stdout
    assert "rank=4 (option)" in out and "lr=0.0003 (preset fast)" in out
    assert f"seg_len={tiny['seg_len']} (model)" in out
