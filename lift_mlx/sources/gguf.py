"""An existing file: a GGUF, imported once into $LIFT_MLX_HOME/models."""

from __future__ import annotations

from pathlib import Path

from ..store import cached_sha256
from .base import ModelSource


class GGUFFile(ModelSource):
    name = "gguf"
    help = "a .gguf file (imported once into $LIFT_MLX_HOME/models)"
    order = 30

    def claims(self, model: str) -> bool:
        return Path(model).expanduser().is_file()

    def resolve(self, model: str) -> Path:
        # gguf_import brings numpy, gguf and mlx_lm (~2 s): deferred so lift-mlx --help,
        # which reads this module's help, stays fast
        from ..gguf_import import import_gguf

        path = Path(model).expanduser()
        return import_gguf(path, sha256=cached_sha256(path))


SOURCE = GGUFFile()
