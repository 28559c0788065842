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
    assert all("hub_id" in m or "wheel" in m or (MODELS_DIR / m["path"]).is_dir()
               for m in models.values())


def test_a_built_wheel_carries_the_bundled_models(tmp_path):
    """A non-editable install (a wheel) finds the presets and tiny models without the source
    tree: they install as lift_mlx/bundled_models."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation",
                    "--no-deps", str(root), "-w", str(tmp_path / "wheel")], check=True)
    wheel = next((tmp_path / "wheel").glob("lift_mlx-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(tmp_path / "site"), str(wheel)], check=True)
    code = ("from lift_mlx.models import resolve_model, presets; "
            "print(resolve_model('tiny')); print(presets()['default'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, text=True,
                         capture_output=True, env={"PYTHONPATH": str(tmp_path / "site"),
                                                   "PATH": "/usr/bin:/bin",
                                                   "HF_HUB_OFFLINE": "1"}).stdout.split()
    bundled = tmp_path / "site" / "lift_mlx" / "bundled_models"
    assert out == [str(bundled / "tiny-llama"), presets()["default"]]
    assert (bundled / "tiny-llama" / "model.safetensors").is_file()
    assert (bundled / "world-tiny" / "model.safetensors").is_file()
