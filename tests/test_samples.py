import random

import numpy as np

from lift_mlx import prompts
from lift_mlx.answer import question_prompt
from lift_mlx.generator_styles import QAPair
from lift_mlx.samples import (
    QASamples,
    Sample,
    buckets_for,
    make_batch,
    plan_epoch,
    qa_sample,
    recite_samples,
)


def test_qa_sample_masks_exactly_the_answer_and_end_of_turn(tiny_lm):
    tok = tiny_lm.tokenizer
    s = qa_sample(tok, "  Who chairs it? ", " Ada Korrin ")
    answer = tok.encode("Ada Korrin", add_special_tokens=False) + [tok.eos_token_id]
    n = len(answer)
    assert list(s.tokens[-n:]) == answer
    assert s.mask == (0,) * (len(s) - n) + (1,) * n
    # The prompt part is exactly what `ask --no-context` sends.
    prompt = prompts.chat_ids(tok, prompts.question_body(tok, "Who chairs it?"))
    assert list(s.tokens[: len(s) - n]) == prompt
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")


def test_qa_samples_with_a_view_see_the_prompt_ask_builds(tiny_lm, demo_text):
    tok = tiny_lm.tokenizer
    ids = tok.encode(demo_text, add_special_tokens=False)
    pairs = [QAPair(f"Who chairs part {i}?", f"Member {i}") for i in range(200)]
    window, max_tokens = 512, 24
    # the view `ask --window 512` shows beside a 24-token answer (questions of this length)
    budget = window - max_tokens - 64
    viewed = QASamples(tok, ids, budget, 1.0, random.Random(0))(pairs[:3])
    for p, s in zip(pairs, viewed):
        prompt = question_prompt(tok, p.question, ids, window, max_tokens)
        assert len(ids) > budget and len(prompt) > budget
        assert list(s.tokens[: len(prompt)]) == prompt
        assert list(s.tokens[len(prompt):]) == tok.encode(p.answer, add_special_tokens=False) \
            + [tok.eos_token_id]
        assert s.n_targets == len(s) - len(prompt)
    # a share of them, picked by the seed; off: the bare question
    some = QASamples(tok, ids, budget, 0.25, random.Random(5))(pairs)
    shown = [len(s) > budget for s in some]
    assert 30 < sum(shown) < 70
    assert shown == [len(s) > budget for s in QASamples(tok, ids, budget, 0.25,
                                                           random.Random(5))(pairs)]
    bare = [qa_sample(tok, p.question, p.answer) for p in pairs[:3]]
    assert QASamples(tok, ids, 0, 1.0, random.Random(0))(pairs[:3]) == bare
    assert QASamples(tok, ids, budget, 0.0, random.Random(0))(pairs[:3]) == bare


def test_recite_samples_cover_segments_with_loss_on_segment_only(tiny_lm, demo_text):
    tok = tiny_lm.tokenizer
    ids = tok.encode(demo_text, add_special_tokens=False)
    samples = recite_samples(tok, ids, seg_len=200, stride=80, context_len=0,
                             rng=random.Random(0))
    starts = list(range(0, len(ids) - 200 + 1, 80))
    if starts[-1] + 200 < len(ids):
        starts.append(len(ids) - 200)
    assert len(samples) == len(starts)
    bare = prompts.chat_ids(tok, prompts.recite_body(tok, None))
    for s, start in zip(samples, starts):
        target = ids[start : start + 200] + [tok.eos_token_id]
        assert list(s.tokens) == bare + target
        assert s.mask == (0,) * len(bare) + (1,) * len(target)
    assert samples[-1].tokens[-201:-1] == tuple(ids[-200:])  # last window ends at the end


def test_recite_context_is_head_and_tail_of_the_document(tiny_lm, demo_text):
    tok = tiny_lm.tokenizer
    ids = tok.encode(demo_text, add_special_tokens=False)
    samples = recite_samples(tok, ids, 256, 128, context_len=100, rng=random.Random(3))
    header = prompts.encode(tok, prompts.CONTEXT_HEADER)
    sep = prompts.encode(tok, prompts.ELLIPSIS)
    for s in samples:
        i = next(k for k in range(len(s.tokens)) if list(s.tokens[k:k + len(header)]) == header)
        context = list(s.tokens[i + len(header): i + len(header) + 100])
        j = next(k for k in range(len(context)) if context[k:k + len(sep)] == sep)
        head, tail = context[:j], context[j + len(sep):]
        assert head == ids[: len(head)]
        assert tail == ids[len(ids) - len(tail):] or not tail
        assert len(head) + len(sep) + len(tail) == 100
        assert s.n_targets == 257  # the segment and the end of turn


def test_batches_have_fixed_shapes_and_correct_shifted_targets():
    samples = [Sample(tuple(range(1, n + 1)), (0,) * 2 + (1,) * (n - 2), "qa")
               for n in (5, 9, 40, 70, 130)]
    buckets = buckets_for(max(len(s) for s in samples) - 1)
    assert buckets == [64, 128, 256]
    plan = plan_epoch(samples, 2, buckets, random.Random(0))
    assert sorted(len(c) for _, c in plan) == [1, 1, 1, 2]  # 3 in bucket 64, 1 each above
    assert {length for length, _ in plan} == {64, 128, 256}
    b = make_batch([samples[1]], batch_size=2, length=64, pad_id=0)
    assert b.inputs.shape == b.targets.shape == b.mask.shape == (2, 64)
    assert list(b.inputs[0, :8]) == list(range(1, 9))
    assert list(b.targets[0, :8]) == list(range(2, 10))
    # target k is token k+1; its mask entry is that token's mask
    assert list(b.mask[0, :8]) == [0, 1, 1, 1, 1, 1, 1, 1]
    assert b.mask[1].sum() == 0 and b.mask[0, 8:].sum() == 0  # padding and the spare row
    assert b.n_tokens == 8
    assert np.all(b.inputs[0, 8:] == 0)
