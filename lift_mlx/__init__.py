"""lift-mlx: Long Input Fine-Tuning (LIFT) on MLX."""

from . import backend as _backend  # noqa: F401  (must run before mlx.core is imported)
from .errors import LiftError

__all__ = ["LiftError"]
__version__ = "0.1.0"
