import dataclasses

import pytest

from lift_mlx.config import (
    PRESETS,
    SETTINGS,
    AnswerSettings,
    Settings,
    declared,
    preset,
    setting_sources,
)
from lift_mlx.errors import LiftError
from lift_mlx.presets import presets


def test_model_settings_go_under_the_preset_and_options_over_both():
    model = {"rank": 8, "lr": 1e-3, "seg_len": 128, "stride": 48}
    s = preset("fast", model, rank=4)
    assert (s.train.rank, s.train.lr, s.split.seg_len) == (4, PRESETS["fast"]["lr"], 128)
    assert setting_sources("fast", model, rank=4, epochs=None) == {
        "rank": "option", "lr": "preset fast", "seg_len": "model", "stride": "model",
        **{k: "preset fast" for k in PRESETS["fast"] if k not in ("lr",)}}
    assert preset("default", model).train.lr == 1e-3  # the default preset sets nothing


def test_stage_settings_with_shared_words_stay_apart():
    s = preset("default", batch_size=1, generator_batch_size=3)
    assert (s.train.batch_size, s.synth.generator_batch_size) == (1, 3)
    # a 0.1 entry stored the generator's batch as synth.batch_size
    old = Settings.from_dict({"synth": {"batch_size": 8}, "train": {"batch_size": 2}})
    assert (old.synth.generator_batch_size, old.train.batch_size) == (8, 2)


def test_unknown_values_are_refused_with_the_option_to_fix():
    with pytest.raises(LiftError, match="--loss-mean"):
        preset("default", loss_mean="words")
    with pytest.raises(LiftError, match="unknown preset"):
        preset("huge")


def test_the_paper_preset_is_the_paper_values_of_the_declarations():
    assert PRESETS["paper"] == dict(rank=128, scale=2.0, lr=5e-5, epochs=5, qa_per_sentence=10,
                                    sentences_per_task=1, max_tokens=640, seg_len=2048,
                                    stride=768, context_len=4096)
    s = preset("paper")
    assert (s.train.rank, s.split.context_len, s.synth.max_tokens) == (128, 4096, 640)


def test_every_field_is_declared_once_with_its_help():
    fields = [(stage.name, f.name) for stage in dataclasses.fields(Settings)
              for f in dataclasses.fields(stage.default_factory)]
    assert sorted((s.stage, s.field) for s in SETTINGS.values()) == sorted(fields)
    for s in SETTINGS.values():
        assert s.help.endswith(".") and s.default == getattr(getattr(Settings(), s.stage),
                                                             s.field), s.name


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items()
                                  if s.min is not None or s.choices is not None])
def test_each_declared_range_is_enforced_in_its_own_words(name):
    s = SETTINGS[name]
    if s.choices is not None:
        bad = ("dance",) if s.type == tuple[str, ...] else "dance"
    else:
        bad = s.min if s.min_open else s.min - 1
        assert s.problem(s.max if s.max is not None else s.min + 1) is None
    with pytest.raises(LiftError) as e:
        preset("default", **{name: bad})
    assert str(e.value).startswith(f"{s.label} must be {s.allowed(bad)}, not ")
    if s.max is not None:
        with pytest.raises(LiftError) as e:
            preset("default", **{name: s.max * 2 + 1})
        assert str(e.value).startswith(f"{s.label} must be {s.allowed(s.max * 2 + 1)}, not ")


SIZES = ("seg_len", "stride", "context_len", "qa_context_len", "qa_per_sentence",
         "sentences_per_task", "window_chars", "max_tokens", "generator_batch_size", "rank",
         "o_proj_rank", "epochs", "batch_size", "micro_batch", "checkpoint_every")


@pytest.mark.parametrize("name", SIZES)
def test_every_size_has_a_ceiling_above_every_preset(name):
    """--rank 1000000 allocated gigabytes before failing: each size-like setting has a `max`,
    which the paper's values, the presets and every model's recommended settings stay under."""
    s = SETTINGS[name]
    assert s.max is not None and s.problem(s.max) is None and s.problem(s.max + 1)
    for preset_name in PRESETS:
        preset(preset_name)
    for model in presets()["models"].values():
        values = preset(model.get("preset", "default"), model.get("settings", {}))
        assert getattr(getattr(values, s.stage), s.field) <= s.max
    assert s.paper is None or s.paper <= s.max


@pytest.mark.parametrize("overrides, message", [
    (dict(rank=1_000_000), "--rank must be at most 1024, not 1000000"),
    (dict(batch_size=1_000_000), "--batch-size must be at most 1024, not 1000000"),
    (dict(qa_per_sentence=1_000_000), "--qa-per-sentence must be at most 64, not 1000000"),
    (dict(seed=-1), "--seed must be at least 0, not -1"),
    (dict(seed=2**64), "--seed must be at most 4294967295, not 18446744073709551616"),
    (dict(lr=float("inf")), "--lr must be finite and positive, not inf"),
    (dict(lr=float("nan")), "--lr must be finite and positive, not nan"),
    (dict(scale=float("-inf")), "--scale must be finite and positive, not -inf"),
    (dict(temp=float("nan")), "temp must be finite and at least 0, not nan"),
    (dict(qa_context_share=float("inf")),
     "--qa-context-share must be finite and between 0 and 1, not inf"),
])
def test_runaway_sizes_seeds_and_non_finite_floats_are_refused(overrides, message):
    with pytest.raises(LiftError) as e:
        Settings().replace(**overrides)
    assert str(e.value) == message


def test_every_float_setting_refuses_nan_and_infinity():
    for s in [*SETTINGS.values(), *declared(AnswerSettings, "answer")]:
        if s.type is float:
            for value in (float("nan"), float("inf"), float("-inf")):
                assert s.problem(value).startswith("must be finite and "), s.name


@pytest.mark.parametrize("overrides, message", [
    (dict(lr=-1.0), "--lr must be positive, not -1"),
    (dict(rank=0), "--rank must be at least 1, not 0"),
    (dict(min_overlap=1.5), "min_overlap must be between 0 and 1, not 1.5"),
    (dict(style="xml"),
     "--generator-style must be one of auto, json, lines, answers, about, not xml"),
    (dict(tasks=()),
     "--tasks must be a comma-separated subset of recite,qa,cloze,phrases, not none"),
    (dict(seg_len=256, stride=300), "--stride must be between 1 and --seg-len"),
])
def test_python_overrides_out_of_range_say_which_and_why(overrides, message):
    with pytest.raises(LiftError) as e:
        Settings().replace(**overrides)
    assert str(e.value) == message


def test_flat_names_reach_their_own_stage():
    s = Settings().replace(seg_len=512, style="json", tasks=["recite"], compile=False)
    assert (s.split.seg_len, s.synth.style, s.train.tasks, s.train.compile) == (
        512, "json", ("recite",), False)
    with pytest.raises(TypeError, match="unknown setting 'segment'"):
        Settings().replace(segment=3)


def test_gated_trains_at_its_own_learning_rate_unless_an_option_says_else():
    model = {"lr": 5e-4, "rank": 16}  # tuned for LoRA
    for name in PRESETS:
        assert preset(name, model, adapter="gated").train.lr == 1e-3
    assert preset("fast", model, adapter="gated", lr=3e-3).train.lr == 3e-3
    assert preset("fast", model).train.lr == PRESETS["fast"]["lr"]  # LoRA as before
    assert setting_sources("default", model, adapter="gated")["lr"] == "adapter gated"
    assert setting_sources("default", model, adapter="gated", lr=3e-3)["lr"] == "option"
    assert setting_sources("default", model)["lr"] == "model"


def test_a_kind_s_own_settings_key_only_its_adapters():
    """o_proj_rank is Gated Memory's, rank LoRA's: changing one leaves the other kind's
    adapter key as it was (so LoRA adapters stored before Gated Memory keep their keys)."""
    lora, gated = preset("default"), preset("default", adapter="gated")
    assert "o_proj_rank" not in lora.keyed()["train"] and "rank" in lora.keyed()["train"]
    assert "rank" not in gated.keyed()["train"] and "o_proj_rank" in gated.keyed()["train"]
    assert lora.replace(o_proj_rank=0).keyed() == lora.keyed()
    assert gated.replace(rank=8).keyed() == gated.keyed()
    assert gated.replace(o_proj_rank=0).keyed() != gated.keyed()
    # what experiments tag their runs with: a LoRA run's settings as before Gated Memory
    assert "o_proj_rank" not in lora.used()["train"] and "rank" not in gated.used()["train"]


def test_settings_added_later_key_adapters_only_when_changed():
    """The QA view settings came after adapters were stored: at their defaults they are no
    part of the key (those adapters keep their keys), changed they are."""
    s = preset("default")
    assert "qa_context_len" not in s.keyed()["split"]
    assert "qa_context_share" not in s.keyed()["split"]
    assert "qa_context_len" in s.used()["split"]  # still recorded with the adapter
    on = s.replace(qa_context_len=256)
    assert on.keyed() != s.keyed() and on.keyed()["split"]["qa_context_len"] == 256
    assert on.replace(qa_context_share=0.5).keyed() != on.keyed()
