import random

import mlx.core as mx
import pytest

from lift_mlx.adapters import LORA
from lift_mlx.config import TrainSettings
from lift_mlx.models import load_model
from lift_mlx.prompts import encode
from lift_mlx.samples import Sample, buckets_for, epoch_batches, recite_samples
from lift_mlx.train import Diverged, Trainer, mean_nll, train


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
    LORA.attach(tiny_lm.model, settings)
    report = train(tiny_lm.model, samples, settings, tok.pad_token_id)
    after = mean_nll(tiny_lm.model, doc, tok.pad_token_id)
    assert report.steps == 50  # 20 segments / batch 4 x 10 epochs
    assert after <= 0.65 * before, (before, after)
    assert report.losses[-1] < report.losses[0]


@pytest.mark.parametrize("lr, max_steps, words", [
    (1e30, None, "the loss of step 2 is nan"),  # the first update overflows the next loss
    (float("inf"), 1, "the last step left weights that are not finite"),
])
def test_training_that_turns_non_finite_stops_with_diverged(tiny_lm, demo_text, lr, max_steps,
                                                             words):
    """A non-finite loss, or a last update that leaves NaN weights, is an error naming the
    learning rate, not an adapter of NaNs (--lr inf once stored one that verified)."""
    tok = tiny_lm.tokenizer
    samples = recite_samples(tok, encode(tok, demo_text), 128, 64, 0, random.Random(0))
    settings = TrainSettings(rank=4, lr=lr, epochs=1, grad_checkpoint=False, compile=False)
    LORA.attach(tiny_lm.model, settings)
    with pytest.raises(Diverged) as e:
        train(tiny_lm.model, samples, settings, tok.pad_token_id, max_steps=max_steps)
    assert words in str(e.value) and f"--lr (this run's: {lr:g})" in str(e.value)


def _few_steps(path, settings: TrainSettings, samples, steps=3):
    lm = load_model(str(path))
    LORA.attach(lm.model, settings)
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


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("mean", ["tokens", "samples"])
def test_micro_batches_take_the_whole_batch_step_in_less_memory(tiny_model_path, tiny_lm,
                                                                demo_text, compile, mean):
    ids = encode(tiny_lm.tokenizer, demo_text)
    # rows of unequal length and targets, so each part's share of the loss must be weighed
    samples = [Sample(tuple(ids[i:i + n]), (0,) * (n // 3) + (1,) * (n - n // 3), "doc")
               for i, n in [(0, 300), (40, 180), (90, 300), (400, 250)]]
    results = {}
    for micro in (0, 1, 3):
        settings = TrainSettings(rank=8, lr=1e-3, batch_size=4, compile=compile,
                                 grad_checkpoint=False, loss_mean=mean, micro_batch=micro)
        mx.clear_cache()
        mx.reset_peak_memory()
        losses, _, _ = _few_steps(tiny_model_path, settings, samples, steps=4)
        results[micro] = losses, mx.get_peak_memory()
    whole, whole_peak = results[0]
    for micro in (1, 3):
        losses = results[micro][0]
        assert losses == pytest.approx(whole, rel=1e-4), micro  # the same four updates
        assert losses[-1] < losses[0]
    one_row_peak = results[1][1]
    assert one_row_peak < 0.8 * whole_peak, (one_row_peak, whole_peak)


def _trainer_on(path, settings: TrainSettings) -> Trainer:
    lm = load_model(str(path))
    LORA.attach(lm.model, settings)
    return Trainer(lm.model, settings)


def test_a_micro_batched_step_hands_the_optimizer_the_whole_batch_gradients(tiny_model_path,
                                                                            tiny_lm, demo_text):
    ids = encode(tiny_lm.tokenizer, demo_text)
    samples = [Sample(tuple(ids[i:i + n]), (0,) * (n // 3) + (1,) * (n - n // 3), "doc")
               for i, n in [(0, 120), (40, 90), (90, 120), (400, 100)]]
    batch = next(epoch_batches(samples, 4, buckets_for(119), 0, random.Random(0)))
    seen = {}
    for micro in (0, 1, 3):  # the whole batch; four parts; a part of three rows and one of one
        settings = TrainSettings(rank=8, lr=1e-3, batch_size=4, compile=False,
                                 grad_checkpoint=False, micro_batch=micro)
        trainer = _trainer_on(tiny_model_path, settings)
        update = trainer.optimizer.update

        def record(model, grads, micro=micro, update=update):
            seen[micro] = _flat(grads)  # eager: real arrays, not a trace's
            return update(model, grads)

        trainer.optimizer.update = record
        trainer.step(batch)
    whole = seen[0]
    assert whole and any(mx.abs(g).max().item() > 0 for g in whole.values())
    for micro in (1, 3):
        assert seen[micro].keys() == whole.keys()
        for key, g in whole.items():  # float32 sums in another order (measured: < 1e-6)
            scale = mx.abs(g).max().item()
            assert mx.abs(seen[micro][key] - g).max().item() <= 1e-5 * scale + 1e-9, (micro, key)


def test_a_compiled_micro_batched_run_traces_a_few_times_per_length(tiny_model_path, tiny_lm,
                                                                    demo_text):
    samples = _mixed_samples(tiny_lm.tokenizer, demo_text)  # two lengths, three rows of four
    buckets = buckets_for(max(len(s) for s in samples) - 1)
    batches = list(epoch_batches(samples, 4, buckets, 0, random.Random(0))) * 4
    params, start = {}, {}
    # traces per length: the whole batch one; four parts three (the first, the middle ones,
    # the last); a part of three rows and one of one two (first, last)
    for micro, per_length in ((0, 1), (1, 3), (3, 2)):
        settings = TrainSettings(rank=8, lr=1e-3, batch_size=4, compile=True,
                                 grad_checkpoint=False, micro_batch=micro)
        trainer = _trainer_on(tiny_model_path, settings)
        if not micro:  # the same seed: every run starts from this adapter
            start = _flat(trainer.model.trainable_parameters())
        for b in batches:
            trainer.step(b)
        assert trainer.traces == 2 * per_length, micro  # eight steps, never traced again
        params[micro] = _flat(trainer.model.trainable_parameters())

    def norm(tree_a, tree_b):
        return sum(mx.sum((tree_a[k] - tree_b[k]) ** 2).item() for k in start) ** 0.5

    moved = max(mx.abs(params[0][k] - start[k]).max().item() for k in start)
    assert moved > 1e-3  # eight steps moved the adapter
    # the same eight updates. Measured, |difference| / |move|: 6e-6 with MLX's reference BLAS,
    # 4e-5 with OpenBLAS's Zen kernels: the bound is 25x the larger.
    # Adam turns float sums in another order into a larger step for a few elements: with Zen
    # kernels one element of 512 ends 1.2e-4 away (0.5% of its own move, 2.7e-3 of the largest)
    for micro in (1, 3):
        ratio = norm(params[micro], params[0]) / norm(params[0], start)
        diff = max(mx.abs(params[micro][k] - params[0][k]).max().item() for k in start)
        assert ratio <= 1e-3 and diff <= 1e-2 * moved, (micro, ratio, diff, moved)


def test_qlora_on_a_4bit_base_trains_only_the_adapter(tiny_q4_path, demo_text):
    lm = load_model(str(tiny_q4_path))
    assert "quantization" in lm.config
    tok = lm.tokenizer
    ids = encode(tok, demo_text)[:600]
    samples = recite_samples(tok, ids, 128, 128, 0, random.Random(0))
    base = {k: mx.array(v) for k, v in _flat(lm.model.parameters()).items()}
    settings = TrainSettings(rank=8, lr=3e-3, epochs=8, grad_checkpoint=False, compile=False)
    LORA.attach(lm.model, settings)
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


def test_target_only_loss_equals_the_full_loss_and_trims_padding(tiny_lm, demo_text):
    """The output layer at the target positions alone, and a batch cut to its real rows and
    columns, give the same loss and gradients as full logits over the padded batch."""
    import mlx.nn as nn
    import numpy as np
    from mlx.utils import tree_flatten

    from lift_mlx.samples import make_batch, qa_sample
    from lift_mlx.train import _target_index, masked_loss, output_layer, target_loss

    tok = tiny_lm.tokenizer
    samples = [qa_sample(tok, "Who owns the lighthouse?", "the town"),
               qa_sample(tok, "How much is the entry share?", "300 crowns")]
    batch = make_batch(samples, 4, 64, tok.pad_token_id)  # 2 padding rows, padded columns
    trimmed = batch.trimmed()
    assert trimmed.inputs.shape == (2, max(len(s) for s in samples) - 1)
    assert trimmed.n_tokens == batch.n_tokens and trimmed.mask.sum() == batch.mask.sum()
    model = tiny_lm.model
    LORA.attach(model, TrainSettings(rank=4))
    assert output_layer(model) is not None
    full_fn = nn.value_and_grad(model, masked_loss)
    part_fn = nn.value_and_grad(model, target_loss)
    full, g_full = full_fn(model, *(mx.array(a) for a in (batch.inputs, batch.targets,
                                                          batch.mask)))
    index, ids, weights = _target_index(trimmed.mask, trimmed.targets)
    assert len(index) == int(batch.mask.sum())
    part, g_part = part_fn(model, mx.array(trimmed.inputs), mx.array(index), mx.array(ids),
                           mx.array(weights))
    assert abs(full.item() - part.item()) < 1e-5
    for (name, a), (_, b) in zip(tree_flatten(g_full), tree_flatten(g_part)):
        assert np.allclose(np.array(a), np.array(b), atol=1e-5), name


def test_loss_mean_over_samples_weighs_each_sample_equally(tiny_lm, demo_text):
    """With loss_mean="samples" a step's loss is the mean of each sample's own mean loss, so a
    4-token answer counts as much as a 100-token segment (with "tokens" it counts 4/104)."""
    from lift_mlx.samples import make_batch, qa_sample
    from lift_mlx.train import masked_loss

    tok = tiny_lm.tokenizer
    ids = encode(tok, demo_text)
    long = Sample(tuple(ids[:100]), (1,) * 100, "recite")
    short = qa_sample(tok, "Who owns the lighthouse?", "the town")
    batch = make_batch([long, short], 2, 128, tok.pad_token_id)
    weighted = batch.per_sample()
    assert weighted.mask.sum(axis=1).tolist() == pytest.approx([1.0, 1.0])

    def loss_of(b):
        return masked_loss(tiny_lm.model, mx.array(b.inputs), mx.array(b.targets),
                           mx.array(b.mask)).item()

    alone = [loss_of(make_batch([s], 1, 128, tok.pad_token_id)) for s in (long, short)]
    assert loss_of(weighted) == pytest.approx(sum(alone) / 2, rel=1e-4)
    n_long, n_short = long.n_targets - 1, short.n_targets  # the first token is never a target
    by_tokens = (alone[0] * n_long + alone[1] * n_short) / (n_long + n_short)
    assert loss_of(batch) == pytest.approx(by_tokens, rel=1e-4)
    for mean in ("tokens", "samples"):  # and the trainer uses the weighting it is given
        lm = load_model(str(tiny_lm.path))
        settings = TrainSettings(rank=4, lr=1e-9, loss_mean=mean, grad_checkpoint=False)
        LORA.attach(lm.model, settings)
        step_loss = Trainer(lm.model, settings).step(batch).item()
        assert step_loss == pytest.approx(loss_of(weighted if mean == "samples" else batch),
                                          rel=1e-3)


def test_a_cosine_schedule_reaches_the_compiled_step_without_a_new_trace(tiny_model_path,
                                                                          tiny_lm, demo_text):
    """The rate of every step goes into the compiled step as a value: the compiled run's
    losses are the eager run's under the same schedule, apart from the constant rate's, and
    the step is traced once per shape."""
    from lift_mlx.train import TrainLoop, scheduled_lr

    samples = _mixed_samples(tiny_lm.tokenizer, demo_text)
    buckets = buckets_for(max(len(s) for s in samples) - 1)
    batches = list(epoch_batches(samples, 2, buckets, 0, random.Random(0))) * 4  # 12 steps
    runs = {}
    for schedule, compiled in (("cosine", False), ("cosine", True), ("constant", True)):
        settings = TrainSettings(rank=8, lr=5e-3, batch_size=2, compile=compiled,
                                 grad_checkpoint=False, lr_schedule=schedule)
        lm = load_model(str(tiny_model_path))
        LORA.attach(lm.model, settings)
        loop = TrainLoop(lm.model, settings, total=len(batches))
        for b in batches:
            loop(b)
        report = loop.close()
        runs[schedule, compiled] = report.losses, loop.trainer
    cosine, trainer = runs["cosine", True]
    assert cosine == pytest.approx(runs["cosine", False][0], rel=1e-4)
    assert trainer.traces == 2  # two shapes
    assert trainer.optimizer.learning_rate.item() == pytest.approx(5e-4)  # the floor: a tenth
    assert scheduled_lr(trainer.settings, 0, 100) == pytest.approx(5e-3 / 5)  # warming up
    constant = runs["constant", True][0]
    assert constant[0] == pytest.approx(cosine[0], rel=1e-5)  # the same start
    assert abs(constant[-1] - cosine[-1]) > 1e-3 * abs(constant[-1])  # other rates since
