import json

from click.testing import CliRunner

from lift_mlx.bench import _lengths, bench, format_table


def test_quick_bench_writes_a_record_per_length_and_arm(tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(bench, ["--quick", "--lengths", "256,384", "--out", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    machine = result["machine"]
    assert machine["mlx"] and machine["mlx_lm"] and machine["backend"]
    assert machine["matmul_flops"] > 1e8 and machine["bandwidth_bytes"] > 1e8
    assert result["model"]["load_s"] > 0 and result["model"]["parameters"] > 0
    arms = [(rec["length"], rec["arm"]) for rec in result["records"]]
    assert arms == [(n, a) for n in (256, 384)
                    for a in ("sequential", "pipeline", "now", "now-view", "in-context")]
    for rec in result["records"]:
        assert abs(rec["doc_tokens"] - rec["length"]) <= 8  # decoding may merge a few tokens
        if rec["arm"] in ("sequential", "pipeline"):
            assert rec["gen_requests"] > 0 and rec["train_steps"] > 0 and rec["traces"] > 0
            assert 0 < rec["split_s"] and 0 < rec["save_s"] < rec["absorb_s"] < rec["ttft_s"]
            assert 0 < rec["floor_s"] < rec["absorb_s"] and 0 < rec["mfu"] < 1
            assert rec["adapter_mb"] > 0 and rec["decode_tok_s"] > 0
            phases = {"sequential": {"split", "synthesize", "train", "save"},
                      "pipeline": {"split", "synthesize+train", "save"}}[rec["arm"]]
            assert set(rec["peak_memory_gb"]) == phases
        if rec["arm"] in ("now", "now-view"):  # a bounded prompt, retrieval timed in it
            assert rec["prompt_tokens"] < 1024 + 64 and 0 <= rec["index_s"] < rec["ttft_s"]
        if rec["arm"] == "in-context":
            assert rec["fits"] and rec["prefill_s"] > 0 and rec["decode_tok_s"] > 0
        assert rec["ttft_s"] > 0
    seq, pipe = result["records"][0], result["records"][1]
    for key in ("gen_requests", "gen_tokens", "qa_pairs", "gen_prompt_tokens"):
        assert seq[key] == pipe[key]  # the same generation, scheduled differently
    assert "TTFT s" in r.stdout and "pipeline" in r.stdout


def test_quick_bench_of_a_gated_memory_adapter(tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(bench, ["--quick", "--lengths", "256", "--adapter", "gated",
                                   "--out", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    assert result["settings"]["adapter"] == "gated"
    trained = [rec for rec in result["records"] if rec["arm"] in ("sequential", "pipeline")]
    assert len(trained) == 2 and all(rec["train_steps"] > 0 for rec in trained)


def test_lengths_and_table():
    assert _lengths(None, None, "1k,2k,512") == [1024, 2048, 512]
    assert _lengths(None, None, None) is None
    table = format_table([{"doc_tokens": 1024, "arm": "now", "ttft_s": 0.5}])
    assert "1,024" in table and "0.50" in table and "-" in table.splitlines()[1]


def test_parameter_count_unpacks_quantized_weights(tiny_model_path, tiny_q4_path):
    """A 4-bit base has as many parameters as its fp32 original (not its packed words)."""
    import mlx_lm

    from lift_mlx.bench import parameter_count

    fp32, _ = mlx_lm.load(str(tiny_model_path))
    q4, _ = mlx_lm.load(str(tiny_q4_path))
    assert parameter_count(q4) == parameter_count(fp32) > 0


def test_answers_only_measures_the_first_answers_without_absorbing(tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(bench, ["--quick", "--lengths", "512", "--answers-only",
                                   "--out", str(out)])
    assert r.exit_code == 0, r.output
    records = json.loads(out.read_text())["records"]
    assert [rec["arm"] for rec in records] == ["now", "now-view", "in-context"]
    now = records[0]
    assert now["index_s"] > 0 and now["ttft_s"] > now["index_s"]
