import pytest

from lift_mlx.errors import LiftError
from lift_mlx.models import MODELS_DIR, load_model, model_fingerprint, presets, resolve_model


def test_unknown_hub_model_offline_is_one_clear_error():
    with pytest.raises(LiftError, match="not in the local Hugging Face cache") as e:
        resolve_model("nobody-here/no-such-model-4bit")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["./no/such/dir", "/tmp/definitely-missing-model", "a/b/c",
                                  "plainword"])
def test_missing_paths_and_malformed_ids_are_refused(name):
    with pytest.raises(LiftError, match="neither an existing directory"):
        resolve_model(name)


def test_directory_without_config(tmp_path):
    with pytest.raises(LiftError, match="not a model directory"):
        resolve_model(str(tmp_path))


def test_bundled_tiny_alias_loads_offline():
    assert resolve_model("tiny") == MODELS_DIR / "tiny-llama"
    lm = load_model("tiny")
    assert lm.window == 1024 and not lm.quantized
    assert lm.fingerprint == model_fingerprint(MODELS_DIR / "tiny-llama")
    ids = lm.tokenizer.encode("Velmora harbour", add_special_tokens=False)
    assert lm.tokenizer.decode(ids) == "Velmora harbour"


def test_presets_name_hub_ids_for_each_mac_size():
    models = presets()["models"]
    assert presets()["default"] in models
    sizes = {m["mac_memory"] for m in models.values()}
    assert {"8 GB", "16 GB", "32 GB+"} <= sizes
    assert all("hub_id" in m or (MODELS_DIR / m["path"]).is_dir() for m in models.values())
