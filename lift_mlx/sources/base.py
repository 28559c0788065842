"""The interface of a model source (see the package's docstring) and the registry that
`resolve_model` asks; it lives here rather than in __init__ so that a source may resolve
another `--model` value (an alias names a hub id) without importing the package that imports
it."""

from __future__ import annotations

from pathlib import Path

from ..errors import LiftError
from ..registry import add


class ModelSource:
    """A kind of `--model` value: whether a value is one of its models, and that model's
    local mlx-lm folder."""

    name: str
    help: str  # one phrase for --model's help and the error of an unknown model
    # Sources are asked in increasing order and the first that claims a value resolves it,
    # so an alias or an existing path wins over a hub id of the same spelling.
    order: int = 100

    def claims(self, model: str) -> bool:
        """Whether `model` names a model of this source."""
        raise NotImplementedError

    def resolve(self, model: str) -> Path:
        """Its local mlx-lm folder (fetched or imported on first use)."""
        raise NotImplementedError


MODEL_SOURCES: dict[str, ModelSource] = {}  # by name, in the order they are asked


def register(source: ModelSource) -> ModelSource:
    """Make `source` one that `resolve_model` asks, in its place by `order`."""
    return add(MODEL_SOURCES, source)


def described() -> str:
    """The values every source takes, as one phrase: "an alias ..., ... or a Hugging Face id"."""
    helps = [s.help for s in MODEL_SOURCES.values()]
    return f"{', '.join(helps[:-1])}, or {helps[-1]}" if len(helps) > 1 else "".join(helps)


def resolve_model(name: str) -> Path:
    """The local mlx-lm folder of the model `name` names, from the first source that claims
    it (GGUF models are imported on first use)."""
    for source in MODEL_SOURCES.values():
        if source.claims(name):
            return source.resolve(name)
    raise LiftError(f"model {name!r} is neither an existing directory or file nor a name "
                    f"lift-mlx knows; give {described()}")


def model_folder(path: Path, name: str) -> Path:
    """`path` if it holds a model (a config.json), else a LiftError naming model `name`."""
    if not (path / "config.json").is_file():
        raise LiftError(f"{path} is not a model directory (no config.json) for model {name!r}")
    return path
