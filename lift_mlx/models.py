"""Loading and identifying base models; where a `--model` value's model comes from is the model
sources' part (lift_mlx/sources/), the presets of models/presets.json are presets.py's."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .errors import LiftError
from .presets import default_model
from .sources import resolve_model
from .store import cached_sha256

DEFAULT_WINDOW = 4096  # used when a config names no max_position_embeddings



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
    """Load the model a `--model` value names (see lift_mlx.sources) with mlx-lm."""
    import mlx_lm  # imports transformers (~1.7 s): deferred so lift-mlx --help stays fast


    name = name or default_model()
    path = resolve_model(name)
    try:
        model, tokenizer, config = mlx_lm.load(str(path), return_config=True)
    except Exception as e:
        raise LiftError(f"could not load model {name!r} from {path}: {e}") from None
    if getattr(tokenizer, "chat_template", None) is None:
        raise LiftError(f"model {name!r} has no chat template; use an instruct/chat model")
    return LoadedModel(model, tokenizer, name, path, config)
