"""Gated Memory (adapters/gated.py): a closed gate is the base bit for bit, a fresh
adapter is close to it, the memory reads the query before the rotary embedding, only its arrays
train, it saves and loads to the same logits, on 4-bit and grouped-query models too, and it goes
through absorb, ask, info and the server."""

import json
import math
import random

import mlx.core as mx
import mlx.nn as nn
import pytest
from click.testing import CliRunner
from conftest import DEMO_DOC, FAST, force_gate
from mlx.utils import tree_flatten
from mlx_lm.models.cache import KVCache

from lift_mlx import adapters, library, store
from lift_mlx.absorb import absorb
from lift_mlx.absorbed import load_absorbed
from lift_mlx.adapters import LORA, base_view
from lift_mlx.adapters.gated import GATED, GatedAttention, gated_layers, mean_gates
from lift_mlx.cli import cli
from lift_mlx.config import TrainSettings
from lift_mlx.models import load_model
from lift_mlx.prompts import encode
from lift_mlx.samples import Sample, buckets_for, epoch_batches
from lift_mlx.serve.model import ServedModel
from lift_mlx.tiny import build_tiny_model
from lift_mlx.train import Trainer, mean_nll, train

PROMPT = mx.array([list(range(3, 40))])
FRESH_GATE = 1 / (1 + math.exp(3))  # sigmoid(-3)


@pytest.fixture(scope="module")
def gqa_model_path(tmp_path_factory):
    """A llama with grouped-query attention shaped like SmolLM2's (9 query heads, 3 KV heads)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-gqa", hidden_size=144,
                            num_heads=9, num_kv_heads=3)


def _attached(path, **settings):
    """The model with a fresh Gated Memory, the base's logits and the adapter's config."""
    lm = load_model(str(path))
    base = lm.model(PROMPT)
    return lm, base, GATED.attach(lm.model, TrainSettings(adapter="gated", **settings))


def _randomize(model, scale=0.3, seed=1):
    """Give every adapter array random values (a fresh memory answers 0 and its gate is flat)."""
    key = mx.random.key(seed)
    weights = []
    for i, (name, value) in enumerate(GATED.trainable(model).items()):
        noise = mx.random.normal(value.shape, key=mx.random.split(key, i + 1)[i])
        weights.append((name, scale * noise))
    model.load_weights(weights, strict=False)


def _force_gate(model, value):
    for attention in gated_layers(model):
        force_gate(attention, value)


@pytest.mark.parametrize("fixture", ["tiny_model_path", "other_model_path", "gqa_model_path",
                                     "tiny_q4_path"])
def test_a_closed_gate_is_the_base_bit_for_bit(fixture, request):
    """llama, qwen2, grouped-query and 4-bit: with g = 0 the logits are the base's exactly,
    whatever the memory holds (no o_proj LoRA, which is not gated)."""
    lm, base, config = _attached(request.getfixturevalue(fixture), o_proj_rank=0)
    _randomize(lm.model)
    _force_gate(lm.model, 0.0)
    assert mx.array_equal(lm.model(PROMPT), base).item()
    _force_gate(lm.model, None)
    assert not mx.allclose(lm.model(PROMPT), base, atol=1e-3).item()


def test_a_fresh_adapter_changes_the_model_a_little(tiny_model_path, gqa_model_path):
    for path in (tiny_model_path, gqa_model_path):
        lm, base, config = _attached(path)
        gates = mean_gates(lm.model, PROMPT[0].tolist())
        assert gates == pytest.approx([FRESH_GATE] * len(lm.model.layers), abs=1e-6)
        fresh = lm.model(PROMPT)
        change = mx.abs(fresh - base).max().item() / mx.abs(base).max().item()
        assert 0 < change < 0.1, change  # each head's attention damped by 4.7%, no more
        _force_gate(lm.model, 0.0)  # the o_proj LoRA starts at zero too
        assert mx.array_equal(lm.model(PROMPT), base).item()


def test_gqa_heads_are_grouped_arrays(gqa_model_path):
    lm, _, config = _attached(gqa_model_path)
    assert all(isinstance(layer.self_attn, GatedAttention) for layer in lm.model.layers)
    w = GATED.trainable(lm.model)
    # 9 query heads of dimension 16: memory 16 -> 32 -> 16, gate 16 -> 4 -> 1, per head
    assert w["model.layers.0.self_attn.w1"].shape == (9, 16, 32)
    assert w["model.layers.0.self_attn.w2"].shape == (9, 32, 16)
    assert w["model.layers.0.self_attn.w4"].shape == (9, 16, 4)
    assert w["model.layers.0.self_attn.w3"].shape == (9, 4, 1)
    assert w["model.layers.0.self_attn.o_a"].shape == (144, 2)


def test_the_memory_reads_the_query_before_the_rotary_embedding(tiny_model_path):
    """With the gate open (g = 1) a head's output is the memory's alone: it matches the
    equations computed by hand on q_proj's output, and it is the same for one input at every
    position and cache offset, which it would not be after the rotary embedding."""
    lm, _, config = _attached(tiny_model_path, o_proj_rank=0)
    _randomize(lm.model)
    attention = lm.model.layers[0].self_attn
    force_gate(attention, 1.0)
    a = attention.attention
    x = mx.random.normal((1, 6, 64), key=mx.random.key(3))
    q = a.q_proj(x).reshape(1, 6, a.n_heads, -1).transpose(0, 2, 1, 3)
    mem = nn.silu(q @ attention.w1) @ attention.w2
    by_hand = a.o_proj(mem.transpose(0, 2, 1, 3).reshape(1, 6, -1))
    assert mx.allclose(attention(x), by_hand, atol=1e-5).item()

    same = mx.broadcast_to(x[:, :1], (1, 6, 64))  # one input at positions 0..5
    out = attention(same)
    assert mx.allclose(out, mx.broadcast_to(out[:, :1], out.shape), atol=1e-5).item()
    cache = KVCache()
    attention(x, cache=cache)  # offset 6 from here on
    assert mx.allclose(attention(same[:, :1], cache=cache), out[:, :1], atol=1e-5).item()
    # The rotary embedding does move the query (the check above would see a post-rotary one).
    assert not mx.allclose(a.rope(q, offset=6), q, atol=1e-3).item()


def test_generation_with_a_kv_cache_matches_the_whole_forward(gqa_model_path):
    lm, _, config = _attached(gqa_model_path)
    _randomize(lm.model)
    whole = lm.model(PROMPT)
    cache = [KVCache() for _ in lm.model.layers]
    first = lm.model(PROMPT[:, :30], cache=cache)
    rest = [lm.model(PROMPT[:, i:i + 1], cache=cache) for i in range(30, PROMPT.shape[1])]
    stepped = mx.concatenate([first, *rest], axis=1)
    assert mx.allclose(stepped, whole, atol=1e-4).item()


def _samples(tokenizer, n=4):
    ids = encode(tokenizer, DEMO_DOC.read_text(encoding="utf-8"))
    return [Sample(tuple(ids[i:i + 48]), (1,) * 48, "doc") for i in range(0, 48 * n, 48)]


def test_training_changes_only_the_adapter_and_learns(tiny_q4_path):
    """On the 4-bit tiny model: the base's arrays stay as they were, every adapter array moves,
    and the document's loss falls."""
    lm = load_model(str(tiny_q4_path))
    before = {k: mx.array(v) for k, v in tree_flatten(lm.model.parameters())}
    settings = TrainSettings(adapter="gated", lr=1e-2, epochs=30, batch_size=2,
                             grad_checkpoint=False, compile=False)
    GATED.attach(lm.model, settings)
    start = {k: mx.array(v) for k, v in GATED.trainable(lm.model).items()}
    samples = _samples(lm.tokenizer)
    nll = mean_nll(lm.model, samples, 0)
    train(lm.model, samples, settings, 0)
    after = dict(tree_flatten(lm.model.parameters()))
    for name, value in before.items():
        moved = name.replace(".self_attn.", ".self_attn.attention.")
        assert mx.array_equal(after[moved], value).item(), name
    for name, value in GATED.trainable(lm.model).items():
        assert not mx.array_equal(value, start[name]).item(), name
    assert mean_nll(lm.model, samples, 0) < 0.6 * nll


def test_the_paper_optimizer_for_gated_and_lora_unchanged(tiny_model_path):
    lm = load_model(str(tiny_model_path))
    GATED.attach(lm.model, TrainSettings(adapter="gated"))
    gated = Trainer(lm.model, TrainSettings(adapter="gated", lr=1e-3)).optimizer
    assert (gated.betas, gated.weight_decay, gated.learning_rate.item()) == (
        [0.9, 0.98], 1e-4, pytest.approx(1e-3))
    adapters.remove(lm.model)
    LORA.attach(lm.model, TrainSettings())
    lora = Trainer(lm.model, TrainSettings()).optimizer
    assert (lora.betas, lora.weight_decay) == ([0.9, 0.999], 0.0)


def test_compiled_and_eager_steps_agree(tiny_model_path):
    losses = {}
    for compiled in (False, True):
        lm = load_model(str(tiny_model_path))
        settings = TrainSettings(adapter="gated", lr=1e-2, batch_size=2, compile=compiled,
                                 grad_checkpoint=False)
        GATED.attach(lm.model, settings)
        trainer = Trainer(lm.model, settings)
        samples = _samples(lm.tokenizer)
        buckets = buckets_for(max(len(s) for s in samples) - 1)
        batches = list(epoch_batches(samples, 2, buckets, 0, random.Random(0)))
        losses[compiled] = [trainer.step(b).item() for b in batches * 3]
        assert trainer.traces == (1 if compiled else len(batches) * 3)
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert losses[False][-1] < losses[False][0]


def test_the_same_seed_gives_the_same_start(tiny_model_path):
    starts = []
    for seed in (0, 0, 1):
        lm, _, config = _attached(tiny_model_path, seed=seed)
        starts.append(GATED.trainable(lm.model))
    assert all(mx.array_equal(starts[0][k], starts[1][k]).item() for k in starts[0])
    assert not mx.array_equal(starts[0]["model.layers.0.self_attn.w1"],
                              starts[2]["model.layers.0.self_attn.w1"]).item()


def test_save_then_load_gives_identical_logits(tiny_model_path, tmp_path):
    lm, base, config = _attached(tiny_model_path)
    _randomize(lm.model)
    adapted = lm.model(PROMPT)
    GATED.save(lm.model, config, tmp_path)
    assert json.loads((tmp_path / store.CONFIG_FILE).read_text())["fine_tune_type"] == "gated"
    assert adapters.kind_of(tmp_path) is GATED
    again = load_model(str(tiny_model_path))
    adapters.load(again.model, tmp_path)
    assert mx.array_equal(again.model(PROMPT), adapted).item()
    assert mx.array_equal(base_view(again.model)(PROMPT), base).item()
    adapters.remove(again.model)
    assert mx.array_equal(again.model(PROMPT), base).item()


def test_an_adapter_of_another_shape_is_refused(tiny_model_path, gqa_model_path, tmp_path):
    from lift_mlx.errors import LiftError

    lm, _, config = _attached(tiny_model_path)
    GATED.save(lm.model, config, tmp_path)
    other = load_model(str(gqa_model_path))
    with pytest.raises(LiftError, match="does not fit this model"):
        GATED.load(other.model, tmp_path)
    assert not gated_layers(other.model)


def test_absorb_with_adapter_gated_then_ask_and_info(tiny_model_path, tmp_path, demo_text):
    doc = tmp_path / "charter.md"
    doc.write_text(demo_text[:2500])
    runner = CliRunner()
    fast = ["--seg-len", "128", "--stride", "64", "--context-len", "32", "--epochs", "1",
            "--no-grad-checkpoint", "--qa-per-sentence", "1"]
    r = runner.invoke(cli, ["absorb", str(doc), "--model", str(tiny_model_path), "--adapter",
                            "gated", *fast])
    assert r.exit_code == 0, r.output
    adapter = store.Path(r.stdout.strip().splitlines()[-1])
    config = json.loads((adapter / store.CONFIG_FILE).read_text())
    meta = json.loads((adapter / store.META_FILE).read_text())
    assert config["fine_tune_type"] == "gated" and config["o_proj_rank"] == 2
    assert meta["settings"]["train"]["adapter"] == "gated"
    assert meta["settings"]["train"]["lr"] == 1e-3  # the paper's, not LoRA's 2e-4
    assert meta["settings_from"]["lr"] == "adapter gated"
    r = runner.invoke(cli, ["ask", str(adapter), "Who owns the lighthouse?", "--no-context",
                            "--max-tokens", "8"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["info", str(adapter)])
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()
             if line.startswith("  ")}
    gates = [float(g) for g in lines["document"]] + [float(g) for g in lines["general"]]
    assert len(gates) == 4 and all(0 < g < 1 for g in gates)
    assert gates != pytest.approx([FRESH_GATE] * 4, abs=1e-4)  # trained away from the start


def test_the_server_swaps_gated_and_lora_adapters(tiny_model_path):
    lm = load_model(str(tiny_model_path))
    made = {}
    for kind in ("gated", "lora"):
        a = absorb(DEMO_DOC, lm, tasks=("recite",), adapter=kind, **FAST)
        made[kind] = (a.adapter_path, lm.model(PROMPT))
    served = ServedModel(lm)
    base = served.model(PROMPT)
    for kind in ("gated", "lora", "gated", None):
        entry = None
        if kind is not None:
            path = made[kind][0]
            entry = served.adapter(library.Entry(path, store.verify(path)))
        served.activate(entry)
        expected = base if kind is None else made[kind][1]
        assert mx.allclose(served.model(PROMPT), expected, atol=1e-5).item(), kind
    assert mx.allclose(load_absorbed(made["gated"][0], lm).lm.model(PROMPT),
                       made["gated"][1], atol=1e-6).item()
