"""Finding, loading and identifying base models, with clear errors instead of hub tracebacks."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from .errors import LiftError


def _models_dir() -> Path:
    """models/ of the source tree (editable installs, tests), else the copy an installed
    package carries as lift_mlx/bundled_models."""
    here = Path(__file__).resolve().parent
    source = here.parent / "models"
    return source if (source / "presets.json").is_file() else here / "bundled_models"


MODELS_DIR = _models_dir()
DEFAULT_WINDOW = 4096  # used when a config names no max_position_embeddings


def presets() -> dict:
    """The model presets in models/presets.json (aliases, hub ids, recommended settings)."""
    path = MODELS_DIR / "presets.json"
    if not path.is_file():
        raise LiftError(
            f"the bundled models folder is missing ({MODELS_DIR}); reinstall lift-mlx "
            "(`pip install .` from its source tree)"
        )
    return json.loads(path.read_text())


def recommended_settings(name: str) -> dict:
    """The settings models/presets.json recommends for model alias `name` (none for others)."""
    entry = presets()["models"].get(name)
    return dict(entry.get("settings", {})) if entry else {}


def default_model() -> str:
    return os.environ.get("LIFT_MLX_MODEL") or presets()["default"]


def _is_hub_id(name: str) -> bool:
    """owner/name, as the hub spells ids; anything else was meant as a local path."""
    return not name.startswith((".", "/", "~")) and name.count("/") == 1 and "\\" not in name


class ModelSource(Protocol):
    """A kind of `--model` value: `resolve_model` asks each of `MODEL_SOURCES` in turn, and
    the first that claims the value resolves it."""

    name: str

    def claims(self, model: str) -> bool:
        """Whether `model` names a model of this source."""

    def resolve(self, model: str) -> Path:
        """Its local mlx-lm folder (fetched or imported on first use)."""


class Alias:
    """An alias of models/presets.json: a folder shipped in models/ (`path`), a GGUF inside a
    wheel fetched with pip (`wheel`, as for smollm2), else its `hub_id`."""

    name = "alias"

    def claims(self, model: str) -> bool:
        return model in presets()["models"]

    def resolve(self, model: str) -> Path:
        from . import sources

        entry = presets()["models"][model]
        if "path" in entry:
            return _check_dir(MODELS_DIR / entry["path"], model)
        if "wheel" in entry:
            return sources.from_wheel(entry["wheel"])
        return resolve_model(entry["hub_id"])


class Ollama:
    """`ollama:NAME[:TAG]`: a model Ollama has pulled, imported once from its GGUF blob."""

    name = "ollama"

    def claims(self, model: str) -> bool:
        return model.startswith("ollama:")

    def resolve(self, model: str) -> Path:
        from . import gguf_import, sources

        blob = sources.ollama_blob(model.removeprefix("ollama:"))
        return gguf_import.import_gguf(blob, sha256=blob.name.removeprefix("sha256-"),
                                       label=model)


class GGUFFile:
    """An existing file: a GGUF, imported once into $LIFT_MLX_HOME/models."""

    name = "gguf"

    def claims(self, model: str) -> bool:
        return Path(model).expanduser().is_file()

    def resolve(self, model: str) -> Path:
        from . import gguf_import, sources

        path = Path(model).expanduser()
        return gguf_import.import_gguf(path, sha256=sources.cached_sha256(path))


class Folder:
    """An existing mlx-lm model folder."""

    name = "folder"

    def claims(self, model: str) -> bool:
        return Path(model).expanduser().exists()

    def resolve(self, model: str) -> Path:
        return _check_dir(Path(model).expanduser(), model)


class HubId:
    """A Hugging Face id (owner/name), from the local cache or downloaded."""

    name = "hub"

    def claims(self, model: str) -> bool:
        return _is_hub_id(model)

    def resolve(self, model: str) -> Path:
        return _from_hub(model)


# Asked in this order: an alias or an existing path wins over a hub id of the same spelling.
MODEL_SOURCES: dict[str, ModelSource] = {
    source.name: source for source in (Alias(), Ollama(), GGUFFile(), Folder(), HubId())}


def resolve_model(name: str) -> Path:
    """The local mlx-lm directory of a model given as an alias, a folder, a GGUF file, an
    `ollama:NAME[:TAG]` or a hub id (GGUF models are imported on first use)."""
    for source in MODEL_SOURCES.values():
        if source.claims(name):
            return source.resolve(name)
    raise LiftError(
        f"model {name!r} is neither an existing directory or .gguf file nor a Hugging "
        "Face id (owner/name); give a local model folder, a GGUF file, ollama:NAME or an id "
        "such as mlx-community/Qwen2.5-1.5B-Instruct-4bit"
    )


def _check_dir(path: Path, name: str) -> Path:
    if not (path / "config.json").is_file():
        raise LiftError(f"{path} is not a model directory (no config.json) for model {name!r}")
    return path


def _from_hub(repo: str) -> Path:
    from huggingface_hub import snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    try:  # the local cache first: no network needed for a model used before
        return Path(snapshot_download(repo, local_files_only=True,
                                      allow_patterns=DEFAULT_ALLOW_PATTERNS))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise LiftError(
            f"model {repo!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
            "download it once while online, or pass a local model directory"
        )
    try:
        return Path(snapshot_download(repo, allow_patterns=DEFAULT_ALLOW_PATTERNS))
    except Exception as e:
        raise LiftError(
            f"could not download model {repo!r} ({type(e).__name__}); check the id and your "
            "connection, or pass a local model directory"
        ) from None


@dataclass
class LoadedModel:
    """A base model with its tokenizer and identity."""

    model: object
    tokenizer: object
    name: str
    path: Path
    config: dict

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.path)

    @property
    def window(self) -> int:
        return int(self.config.get("max_position_embeddings") or DEFAULT_WINDOW)


def model_fingerprint(path: Path) -> str:
    """Identity of a base model: a hash of its config.json and of its weights' content, so a
    model retrained (or re-imported) under an unchanged config is a different model; the
    same for an alias, a path or a hub id that name the same files."""
    from .sources import cached_sha256

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    # An import's weights are a pure function of the GGUF its config names by hash.
    source = config.get("lift_mlx_source", {}).get("sha256")
    weights = [source] if source else [cached_sha256(f) for f in sorted(path.glob("*.safetensors"))]
    blob = json.dumps([config, weights], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_fingerprint(path: Path) -> str:
    """The identity adapters written before weights were hashed carry: config.json alone."""
    config = json.loads((Path(path) / "config.json").read_text())
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def load_model(name: str | None = None) -> LoadedModel:
    """Load a model (alias, local path or hub id) with mlx-lm."""
    import mlx_lm

    name = name or default_model()
    path = resolve_model(name)
    try:
        model, tokenizer, config = mlx_lm.load(str(path), return_config=True)
    except Exception as e:
        raise LiftError(f"could not load model {name!r} from {path}: {e}") from None
    if getattr(tokenizer, "chat_template", None) is None:
        raise LiftError(f"model {name!r} has no chat template; use an instruct/chat model")
    return LoadedModel(model, tokenizer, name, path, config)
