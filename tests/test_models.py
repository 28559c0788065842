import pytest

from lift_mlx.errors import LiftError
from lift_mlx.models import load_model, model_fingerprint
from lift_mlx.presets import MODELS_DIR, presets
from lift_mlx.sources import MODEL_SOURCES, resolve_model


def test_unknown_hub_model_offline_is_one_clear_error():
    with pytest.raises(LiftError, match="not in the local Hugging Face cache") as e:
        resolve_model("nobody-here/no-such-model-4bit")
    assert "\n" not in str(e.value)
    # the way forward where the hub is out of reach: the models that need none
    assert "--model smollm2" in str(e.value) and ".gguf file" in str(e.value)


@pytest.mark.parametrize("name", ["./no/such/dir", "/tmp/definitely-missing-model", "a/b/c",
                                  "plainword"])
def test_missing_paths_and_malformed_ids_are_refused(name):
    with pytest.raises(LiftError, match="neither an existing directory"):
        resolve_model(name)


def test_directory_without_config(tmp_path):
    with pytest.raises(LiftError, match="not a model directory"):
        resolve_model(str(tmp_path))


def test_each_kind_of_model_value_goes_to_its_source(tmp_path):
    """Asked in order: an alias or an existing path before a hub id of the same spelling."""
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "model.gguf").write_bytes(b"GGUF")
    (tmp_path / "owner" / "folder").mkdir()

    def source(value):
        return next((s.name for s in MODEL_SOURCES.values() if s.claims(value)), None)

    assert source("tiny") == "alias" and source("smollm2") == "alias"
    assert source("ollama:qwen2.5:0.5b") == "ollama"
    assert source(str(tmp_path / "owner" / "model.gguf")) == "gguf"
    assert source(str(tmp_path / "owner" / "folder")) == "folder"
    assert source("mlx-community/Qwen2.5-1.5B-Instruct-4bit") == "hub"
    assert source("plainword") is None


def test_a_new_model_source_is_one_registration(monkeypatch, tmp_path):
    class Mirror:  # "mirror:NAME": the models of another folder, by name
        name = "mirror"

        def claims(self, model):
            return model.startswith("mirror:")

        def resolve(self, model):
            return MODELS_DIR / model.removeprefix("mirror:")

    monkeypatch.setitem(MODEL_SOURCES, "mirror", Mirror())
    assert resolve_model("mirror:tiny-llama") == MODELS_DIR / "tiny-llama"
    assert load_model("mirror:tiny-llama").fingerprint == load_model("tiny").fingerprint


def test_bundled_tiny_alias_loads_offline():
    assert resolve_model("tiny") == MODELS_DIR / "tiny-llama"
    lm = load_model("tiny")
    assert lm.window == 1024 and "quantization" not in lm.config
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
    code = ("from lift_mlx.presets import presets; from lift_mlx.sources import resolve_model; "
            "print(resolve_model('tiny')); print(presets()['default'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, text=True,
                         capture_output=True, env={"PYTHONPATH": str(tmp_path / "site"),
                                                   "PATH": "/usr/bin:/bin",
                                                   "HF_HUB_OFFLINE": "1"}).stdout.split()
    bundled = tmp_path / "site" / "lift_mlx" / "bundled_models"
    assert out == [str(bundled / "tiny-llama"), presets()["default"]]
    assert (bundled / "tiny-llama" / "model.safetensors").is_file()
    # every module and sub-package of the source tree is in the wheel
    installed = tmp_path / "site" / "lift_mlx"
    assert ({p.relative_to(installed) for p in installed.rglob("*.py")
             if "bundled_models" not in p.parts}
            == {p.relative_to(root / "lift_mlx") for p in (root / "lift_mlx").rglob("*.py")})


def test_identity_follows_the_weights_not_only_the_config(tmp_path, tiny_model_path):
    """A model retrained under the same config is another model (stale adapters and QA
    caches must not match it); the same files in another folder are the same model."""
    import json
    import shutil

    from lift_mlx.models import config_fingerprint
    from lift_mlx.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "retrained", seed=5)
    same_config = (json.loads((other / "config.json").read_text())
                   == json.loads((tiny_model_path / "config.json").read_text()))
    assert same_config and config_fingerprint(other) == config_fingerprint(tiny_model_path)
    assert model_fingerprint(other) != model_fingerprint(tiny_model_path)
    copy = shutil.copytree(tiny_model_path, tmp_path / "copy")
    assert model_fingerprint(copy) == model_fingerprint(tiny_model_path)


def test_an_adapter_stored_under_the_old_config_identity_still_loads(tmp_path, tiny_lm,
                                                                      demo_text):
    import json

    from lift_mlx import store
    from lift_mlx.absorb import absorb
    from lift_mlx.absorbed import load_absorbed
    from lift_mlx.models import config_fingerprint

    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:800])
    made = absorb(doc, tiny_lm, tasks=("recite",), seg_len=128, stride=64, rank=4, epochs=1,
                  grad_checkpoint=False)
    meta_path = made.adapter_path / store.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["model"]["fingerprint"] = config_fingerprint(tiny_lm.path)  # as 0.1 wrote it
    meta_path.write_text(json.dumps(meta))
    again = load_absorbed(made.adapter_path, tiny_lm)
    assert again.ask("Who owns the lighthouse?", max_tokens=4) == made.ask(
        "Who owns the lighthouse?", max_tokens=4)
