"""`ollama:NAME[:TAG]`: a model Ollama has pulled, read from Ollama's store on disk (no Ollama
process is needed) and imported once from its GGUF blob."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import LiftError
from .base import ModelSource

PREFIX = "ollama:"
REGISTRY = "registry.ollama.ai"
MODEL_LAYER = "application/vnd.ollama.image.model"
# Ollama's Linux installer runs it as a service user whose store lives here.
SERVICE_STORE = Path("/usr/share/ollama/.ollama/models")


class Ollama(ModelSource):
    name = "ollama"
    help = ("ollama:NAME[:TAG] (a model Ollama has pulled, imported once like a .gguf "
            "file)")
    order = 20

    def claims(self, model: str) -> bool:
        return model.startswith(PREFIX)

    def resolve(self, model: str) -> Path:
        # gguf_import brings numpy, gguf and mlx_lm (~2 s): deferred so lift-mlx --help,
        # which reads this module's help, stays fast
        from ..gguf_import import import_gguf

        found = blob(model.removeprefix(PREFIX))
        return import_gguf(found, sha256=found.name.removeprefix("sha256-"), label=model)


SOURCE = Ollama()


def store_dir() -> Path:
    """Ollama's model store: $OLLAMA_MODELS, else ~/.ollama/models, else the Linux service's."""
    if env := os.environ.get("OLLAMA_MODELS"):
        return Path(env).expanduser()
    home = Path.home() / ".ollama" / "models"
    return home if home.is_dir() or not SERVICE_STORE.is_dir() else SERVICE_STORE


def blob(name: str) -> Path:
    """The GGUF blob of Ollama model `NAME[:TAG]` (tag `latest` by default), read from
    Ollama's manifests on disk."""
    if not name or name.startswith(":"):
        raise LiftError("give the Ollama model as ollama:NAME or ollama:NAME:TAG")
    model, _, tag = name.partition(":")
    parts = model.split("/")
    if len(parts) == 1:
        parts = [REGISTRY, "library", *parts]
    elif len(parts) == 2:
        parts = [REGISTRY, *parts]
    root = store_dir()
    manifest = root.joinpath("manifests", *parts, tag or "latest")
    if ".." in parts or not manifest.is_file():
        raise LiftError(f"Ollama model {name!r} is not in {root} (no manifest {manifest}); "
                        f"run `ollama pull {name}` first, or check `ollama list`")
    try:
        layers = json.loads(manifest.read_text())["layers"]
        digest = next(x["digest"] for x in layers if x.get("mediaType") == MODEL_LAYER)
    except (ValueError, KeyError, TypeError, StopIteration):
        raise LiftError(f"the Ollama manifest {manifest} names no model layer") from None
    found = root / "blobs" / digest.replace(":", "-")
    if not found.is_file():
        raise LiftError(f"Ollama's blob {found.name} for {name!r} is missing; run "
                        f"`ollama pull {name}` again")
    return found
