import random

import mlx.core as mx
import pytest

from lift_mlx.config import TrainSettings
from lift_mlx.models import load_model
from lift_mlx.prompts import encode
from lift_mlx.samples import Sample, buckets_for, epoch_batches, recite_samples
from lift_mlx.train import Trainer, attach_lora, mean_nll, train


def plain_samples(ids: list[int], n: int = 256) -> list[Sample]:
    """The document as plain text in windows: every token (but each window's first) scored."""
    return [Sample(tuple(ids[i:i + n]), (1,) * len(ids[i:i + n]), "doc")
            for i in range(0, len(ids), n)]


def test_recite_training_cuts_document_nll(tiny_lm, demo_text):
    # The settings of the acceptance check: recite only, rank 16, lr 1e-3, 10 epochs, 256/96.
    tok = tiny_lm.tokenizer
    ids = encode(tok, demo_text)
    doc = plain_samples(ids)
    before = mean_nll(tiny_lm.model, doc, tok.pad_token_id)
    samples = recite_samples(tok, ids, 256, 96, 0, random.Random(0))
    settings = TrainSettings(rank=16, lr=1e-3, epochs=10, grad_checkpoint=False, compile=False)
    attach_lora(tiny_lm.model, settings)
    report = train(tiny_lm.model, samples, settings, tok.pad_token_id)
    after = mean_nll(tiny_lm.model, doc, tok.pad_token_id)
    assert report.steps == 50  # 20 segments / batch 4 x 10 epochs
    assert after <= 0.65 * before, (before, after)
    assert report.losses[-1] < report.losses[0]


def _few_steps(path, settings: TrainSettings, samples, steps=3):
    lm = load_model(str(path))
    attach_lora(lm.model, settings)
    trainer = Trainer(lm.model, settings)
    buckets = buckets_for(max(len(s) for s in samples) - 1)
    batches = list(epoch_batches(samples, settings.batch_size, buckets, 0, random.Random(0)))
    losses = [trainer.step(b).item() for b in (batches * steps)[:steps]]
    return losses, trainer.traces, len({b.inputs.shape for b in batches})


def _mixed_samples(tokenizer, text):
    ids = encode(tokenizer, text)
    # two lengths -> two buckets -> at most two compiled shapes
    return [Sample(tuple(ids[i:i + n]), (1,) * n, "doc") for i, n in
            [(0, 40), (50, 40), (100, 100), (300, 100), (500, 40), (600, 100)]]


def test_compiled_step_matches_eager_and_traces_once_per_shape(tiny_model_path, tiny_lm,
                                                               demo_text):
    samples = _mixed_samples(tiny_lm.tokenizer, demo_text)
    eager = TrainSettings(rank=8, lr=1e-3, batch_size=2, compile=False, grad_checkpoint=False)
    compiled = TrainSettings(rank=8, lr=1e-3, batch_size=2, compile=True, grad_checkpoint=False)
    l_eager, _, shapes = _few_steps(tiny_model_path, eager, samples, steps=6)
    l_comp, traces, _ = _few_steps(tiny_model_path, compiled, samples, steps=6)
    assert l_comp == pytest.approx(l_eager, rel=1e-4)
    assert shapes == 2
    assert traces == shapes  # six steps, two shapes: traced twice, never again


def test_grad_checkpoint_gives_the_same_losses(tiny_model_path, tiny_lm, demo_text):
    samples = _mixed_samples(tiny_lm.tokenizer, demo_text)
    plain = TrainSettings(rank=8, lr=1e-3, batch_size=2, compile=False, grad_checkpoint=False)
    ckpt = TrainSettings(rank=8, lr=1e-3, batch_size=2, compile=False, grad_checkpoint=True)
    l_plain, _, _ = _few_steps(tiny_model_path, plain, samples)
    l_ckpt, _, _ = _few_steps(tiny_model_path, ckpt, samples)
    assert l_ckpt == pytest.approx(l_plain, rel=1e-4)


def test_qlora_on_a_4bit_base_trains_only_the_adapter(tiny_q4_path, demo_text):
    lm = load_model(str(tiny_q4_path))
    assert lm.quantized
    tok = lm.tokenizer
    ids = encode(tok, demo_text)[:600]
    samples = recite_samples(tok, ids, 128, 128, 0, random.Random(0))
    base = {k: mx.array(v) for k, v in _flat(lm.model.parameters()).items()}
    settings = TrainSettings(rank=8, lr=3e-3, epochs=8, grad_checkpoint=False, compile=False)
    attach_lora(lm.model, settings)
    before = mean_nll(lm.model, samples, tok.pad_token_id)
    train(lm.model, samples, settings, tok.pad_token_id)
    after = mean_nll(lm.model, samples, tok.pad_token_id)
    assert after < 0.9 * before, (before, after)
    trainable = _flat(lm.model.trainable_parameters())
    assert trainable and all(k.endswith(("lora_a", "lora_b")) for k in trainable)
    now = _flat(lm.model.parameters())
    for k, v in base.items():  # the 4-bit weights, scales and norms did not move
        key = k.replace(".weight", ".linear.weight").replace(".scales", ".linear.scales") \
            .replace(".biases", ".linear.biases")
        assert mx.array_equal(now.get(k, now.get(key)), v), k


def _flat(tree):
    from mlx.utils import tree_flatten

    return dict(tree_flatten(tree))
