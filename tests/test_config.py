import pytest

from lift_mlx.config import PRESETS, Settings, preset, setting_sources
from lift_mlx.errors import LiftError


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
