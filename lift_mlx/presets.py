"""The model presets of models/presets.json: aliases, where each model comes from, and the
settings recommended for it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import LiftError


def _models_dir() -> Path:
    """models/ of the source tree (editable installs, tests), else the copy an installed
    package carries as lift_mlx/bundled_models."""
    here = Path(__file__).resolve().parent
    source = here.parent / "models"
    return source if (source / "presets.json").is_file() else here / "bundled_models"


MODELS_DIR = _models_dir()


def presets() -> dict:
    """The model presets in models/presets.json (aliases, hub ids, recommended settings)."""
    path = MODELS_DIR / "presets.json"
    if not path.is_file():
        raise LiftError(
            f"the bundled models folder is missing ({MODELS_DIR}); reinstall lift-mlx "
            "(`pip install .` from its source tree)"
        )
    return json.loads(path.read_text())


def recommended_settings(name: str) -> dict:
    """The settings models/presets.json recommends for model alias `name` (none for others)."""
    entry = presets()["models"].get(name)
    return dict(entry.get("settings", {})) if entry else {}


def _answer(name: str | None) -> dict:
    """models/presets.json's measured "answer" choice for model alias `name` (the default
    model where None); empty for a model without one."""
    entry = presets()["models"].get(name or default_model()) or {}
    return entry.get("answer", {})


def adapter_answers(name: str | None) -> bool:
    """Whether the document's adapter answers by default on model alias `name`: the measured
    choice (`_answer`), else yes."""
    return bool(_answer(name).get("use_adapter", True))


def absorbs_to_answer(name: str | None) -> bool:
    """Whether `ask` and `chat` on model alias `name` absorb a document to answer about it
    by default: the measured choice (`_answer`'s "absorb"), else yes. Where not, the adapter
    answers where one is stored, and the plain base reads the document where none is."""
    return bool(_answer(name).get("absorb", True))


def adapter_checks(name: str | None) -> bool:
    """Whether the adapter's answers from memory are checked against the retrieved passages
    by default on model alias `name` (`--check`): the measured choice, else no."""
    return bool(_answer(name).get("check", False))


def default_model() -> str:
    return os.environ.get("LIFT_MLX_MODEL") or presets()["default"]
