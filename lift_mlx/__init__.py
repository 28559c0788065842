"""lift-mlx: Long Input Fine-Tuning (LIFT) on MLX.

    import lift_mlx
    doc = lift_mlx.absorb("book.txt", model="qwen-1.5b")
    print(doc.ask("Who betrays the captain?"))
"""

from . import backend as _backend  # noqa: F401  (must run before mlx.core is imported)
from .errors import LiftError

__version__ = "0.1.0"
__all__ = ["LiftError", "absorb", "load_absorbed", "load_model", "Absorbed", "Settings",
           "preset"]

_LAZY = {  # imported on first use, so `lift-mlx --help` does not load MLX
    "absorb": "absorb", "load_absorbed": "absorbed", "Absorbed": "absorbed",
    "load_model": "models", "Settings": "config", "preset": "config",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib  # only here: the package's import stays as light as __getattr__

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'lift_mlx' has no attribute {name!r}")
