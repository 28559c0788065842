"""Adapter kinds: each registered kind attaches, trains only its own arrays, saves, loads back
to the same logits and comes off again; adapters stored before kinds were named still load."""

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest

import lift_mlx
from lift_mlx import adapters, store
from lift_mlx.absorb import absorb
from lift_mlx.absorbed import load_absorbed
from lift_mlx.adapters import ADAPTER_KINDS, LORA, base_view
from lift_mlx.config import Settings, TrainSettings
from lift_mlx.errors import LiftError
from lift_mlx.models import load_model
from lift_mlx.presets import MODELS_DIR

# Written by lift-mlx 0.1.0 (`absorb(doc, "tiny", rank=2, ...)`, before adapter kinds): its
# settings have no `adapter`, its config is LoRA's as mlx-lm writes it.
STORED_0_1 = Path(__file__).parent / "data" / "adapter-0.1.0"
PROMPT = mx.array([list(range(3, 30))])


@pytest.mark.parametrize("name", sorted(ADAPTER_KINDS))
def test_each_kind_attaches_saves_loads_and_comes_off(name, tiny_model_path, tmp_path):
    kind = ADAPTER_KINDS[name]
    lm = load_model(str(tiny_model_path))
    base = lm.model(PROMPT)
    view = base_view(lm.model)
    config = kind.attach(lm.model, TrainSettings(adapter=name, rank=4))
    assert config["fine_tune_type"] == name
    weights = kind.trainable(lm.model)
    assert weights and set(weights) == set(_flat(lm.model.trainable_parameters()))
    # An adapter that does something: its arrays moved away from where they start.
    lm.model.load_weights([(k, v + 0.05) for k, v in weights.items()], strict=False)
    adapted = lm.model(PROMPT)
    assert not mx.allclose(adapted, base, atol=1e-4).item()
    assert mx.array_equal(view(PROMPT), base).item()  # the view stays the plain base
    assert mx.array_equal(base_view(lm.model)(PROMPT), base).item()  # and one taken now is it
    kind.save(lm.model, config, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {store.ADAPTER_FILE, store.CONFIG_FILE}
    assert adapters.kind_of(tmp_path) is kind

    again = load_model(str(tiny_model_path))
    adapters.load(again.model, tmp_path)
    assert mx.allclose(again.model(PROMPT), adapted, atol=1e-6).item()
    adapters.remove(again.model)
    assert mx.allclose(again.model(PROMPT), base, atol=1e-6).item()


def _flat(tree):
    from mlx.utils import tree_flatten

    return dict(tree_flatten(tree))


def test_an_adapter_stored_before_adapter_kinds_still_loads(tmp_path):
    """The entry 0.1.0 wrote loads on the bundled tiny model as plain mlx-lm loads it; its
    settings read as LoRA's; a config that names no kind at all is LoRA too."""
    meta = json.loads((STORED_0_1 / store.META_FILE).read_text())
    assert "adapter" not in meta["settings"]["train"]
    assert Settings.from_dict(meta["settings"]).train.adapter == "lora"
    absorbed = load_absorbed(STORED_0_1, "tiny")
    ours = absorbed.lm.model(PROMPT)
    theirs, _ = mlx_lm.load(str(MODELS_DIR / "tiny-llama"), adapter_path=str(STORED_0_1))
    assert mx.allclose(ours, theirs(PROMPT), atol=1e-5).item()
    base, _ = mlx_lm.load(str(MODELS_DIR / "tiny-llama"))
    assert not mx.allclose(base(PROMPT), ours, atol=1e-3).item()

    unnamed = shutil.copytree(STORED_0_1, tmp_path / "unnamed")
    config = json.loads((unnamed / store.CONFIG_FILE).read_text())
    del config["fine_tune_type"]
    (unnamed / store.CONFIG_FILE).write_text(json.dumps(config))
    (unnamed / store.META_FILE).write_text(json.dumps({**meta,
                                                       "checksums": store.checksums(unnamed)}))
    assert adapters.kind_of(unnamed) is LORA
    assert mx.allclose(load_absorbed(unnamed, absorbed.lm).lm.model(PROMPT), ours,
                       atol=1e-6).item()


def test_an_unknown_kind_is_refused_in_words(tmp_path):
    (tmp_path / store.CONFIG_FILE).write_text(json.dumps({"fine_tune_type": "prefix"}))
    with pytest.raises(LiftError,
                       match="unknown adapter kind 'prefix'; this lift-mlx knows lora, gated"):
        adapters.kind_of(tmp_path)
    with pytest.raises(LiftError, match="adapter must be one of lora, gated, not prefix"):
        Settings().replace(adapter="prefix")


@pytest.mark.parametrize("kind", ["lora", "gated"])
def test_an_entry_written_before_the_sub_packages_keeps_its_key_and_logits(kind, tmp_path):
    """Entries written by lift-mlx at commit 070f5b3 (before tasks, adapters and sources became
    sub-packages): the same document, model and settings give the same key, so absorbing again
    reuses the entry instead of training, and it loads to the logits that code computed."""
    entry = Path(__file__).parent / "data" / f"entry-070f5b3-{kind}"
    meta = json.loads((entry / store.META_FILE).read_text())
    stored = shutil.copytree(entry, store.adapters_dir() / meta["key"])
    doc = tmp_path / "doc.md"
    doc.write_text(Path(lift_mlx.__file__).parent.joinpath("data", "demo.md").read_text()[:1200])
    absorbed = absorb(doc, "tiny", tasks=("recite", "cloze"), adapter=kind, seg_len=128,
                      stride=64, context_len=32, rank=2, epochs=1, batch_size=4,
                      grad_checkpoint=False)
    assert absorbed.report.reused and absorbed.adapter_path == stored
    then = np.load(Path(__file__).parent / "data" / "entry-070f5b3-logits.npz")[kind]
    assert np.allclose(np.array(absorbed.lm.model(PROMPT)[0, -1]), then, atol=1e-5)
