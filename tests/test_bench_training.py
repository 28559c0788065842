"""scripts/bench_training.py: the training loops compared on the samples an absorb trains on."""

import json
import subprocess
import sys

from conftest import SCRIPTS, load_script


def test_cloze_samples_are_short_with_the_loss_on_the_answer_alone(tiny_lm):
    from lift_mlx.tasks.cloze import cloze_pairs

    bench = load_script("bench_training")
    tok = tiny_lm.tokenizer
    samples = bench.cloze_samples(tok)
    pairs = cloze_pairs(bench.cloze_text(), 600)
    assert len(samples) == len(pairs) > 100
    for sample, pair in zip(samples, pairs):
        assert sample.kind == "qa"
        start = sample.mask.index(1)
        assert all(sample.mask[start:]) and not any(sample.mask[:start])
        answer = list(sample.tokens[start:])
        assert answer[-1] == tok.eos_token_id
        assert tok.decode(answer[:-1]).strip() == pair.answer
        assert pair.question in tok.decode(list(sample.tokens[:start]))
        assert sample.n_targets < len(sample) / 3  # most of a sample is its prompt


def test_every_arm_runs_as_often_as_asked_and_its_fastest_run_counts(tiny_model_path,
                                                                     tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_training.py"), "--model", str(tiny_model_path),
         "--samples", "cloze", "--steps", "2", "--warmup", "1", "--arms", "lift-mlx,plain",
         "--repeats", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["samples"]["kind"] == "cloze" and result["repeats"] == 2
    assert [r["arm"] for r in result["records"]] == ["lift-mlx", "plain value_and_grad"]
    for record in result["records"]:
        assert len(record["runs_tok_s"]) == 2
        assert record["tok_s"] == max(record["runs_tok_s"]) > 0
    assert result["ratio_plain"] == (result["records"][0]["tok_s"]
                                     / result["records"][1]["tok_s"])
    assert "the fastest of 2 run(s) per arm" in done.stdout
