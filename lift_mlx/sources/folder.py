"""An existing mlx-lm model folder."""

from __future__ import annotations

from pathlib import Path

from .base import ModelSource, model_folder


class Folder(ModelSource):
    name = "folder"
    help = "a local mlx-lm model folder"
    order = 40  # after gguf: an existing file is a GGUF, anything else that exists a folder

    def claims(self, model: str) -> bool:
        return Path(model).expanduser().exists()

    def resolve(self, model: str) -> Path:
        return model_folder(Path(model).expanduser(), model)


SOURCE = Folder()
