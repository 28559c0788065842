import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FAST

import lift_mlx
from lift_mlx import store
from lift_mlx.answer import backing, context_budget, question_prompt
from lift_mlx.cli import cli
from lift_mlx.config import preset
from lift_mlx.errors import LiftError
from lift_mlx.eval.arms import ADAPTERS, ARMS, Arm
from lift_mlx.eval.command import eval_command, parse_depths, parse_lengths
from lift_mlx.eval.datasets import Question, load_eval_set
from lift_mlx.eval.judge import JUDGEMENTS_FILE, judge_records, verdict_score
from lift_mlx.eval.metrics import score
from lift_mlx.eval.records import read_jsonl
from lift_mlx.eval.records import record_key as key
from lift_mlx.eval.run import RECORDS_FILE, RUN_FILE, run_eval, select
from lift_mlx.eval.summary import format_summary, summarize
from lift_mlx.progress import Progress
from lift_mlx.retrieval import Passage

SAMPLES = Path(lift_mlx.__file__).parent / "data" / "samples"
SETS = ["loogle_sample.jsonl", "longbench_sample.jsonl", "native_sample.jsonl"]
# Small enough that some sample documents (500-900 tokens) fit whole and some do not.
WINDOW = 800
MAX_TOKENS = 8
# The tiny model's QA tasks are noise anyway: ask for few and short ones, to keep them cheap.
SETTINGS = preset("default", **FAST, max_tokens=16, sentences_per_task=8)
FAST_ARGS = ["--seg-len", "128", "--stride", "64", "--context-len", "32", "--rank", "4",
             "--epochs", "1", "--no-grad-checkpoint", "--qa-per-sentence", "1", "--tasks",
             "recite", "--max-tokens", str(MAX_TOKENS), "--window", str(WINDOW), "-q"]


def as_question(r) -> Question:
    return Question(r["question_id"], r["question"], r["references"], r["type"],
                    r["keywords"], r["choices"], r["meta"])


@pytest.fixture(scope="module")
def lm(tiny_model_path):
    from lift_mlx.models import load_model

    return load_model(str(tiny_model_path))


@pytest.fixture(scope="module")
def sample_run(lm, tmp_path_factory):
    """All arms on all three shipped sample sets, run once for the tests that read results."""
    root = tmp_path_factory.mktemp("sample-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFT_MLX_HOME", str(root / "home"))
        docs = [d for name in SETS for d in load_eval_set(SAMPLES / name)]
        records = run_eval(docs, lm, root / "out", settings=SETTINGS, max_tokens=MAX_TOKENS,
                           window=WINDOW)
    return docs, records, root / "out"


def test_every_question_gets_one_scored_record_per_arm(sample_run):
    docs, records, out = sample_run
    expected = {(d.id, q.id, arm) for d in docs for q in d.questions for arm in ARMS}
    assert len(records) == len(expected) == 15 * len(ARMS)
    assert {key(r) for r in records} == expected
    assert read_jsonl(out / RECORDS_FILE) == records  # the file holds exactly these
    for r in records:
        for field in ("doc_id", "question_id", "type", "arm", "source", "question",
                      "prediction", "references", "scores", "meta", "doc_tokens"):
            assert field in r, field
        if r["prediction"] is None:
            continue
        assert r["seconds"] > 0 and r["prompt_tokens"] <= WINDOW - MAX_TOKENS
        assert r["scores"] == score(r["prediction"], as_question(r))
    kinds = {m for r in records for m in r["scores"]}
    assert kinds == {"f1", "em", "contains", "rouge_l", "keyword_match", "accuracy"}


def test_adapter_arms_use_one_adapter_per_document(sample_run):
    docs, records, out = sample_run
    absorbs = read_jsonl(out / "absorbs.jsonl")
    assert len(absorbs) == 2 * len(docs)  # lift and raw-ft, each made once per document
    assert not any(a["reused"] for a in absorbs) and all(a["train_steps"] > 0 for a in absorbs)
    # each made adapter's cost: tokens trained (more than one step's worth) and peak memory
    assert all(a["trained_tokens"] > a["train_steps"] and a["peak_memory_gb"] > 0
               for a in absorbs)
    assert all(a["pipeline"] for a in absorbs)  # absorb's default
    for doc in docs:
        by_arm = {r["arm"]: r.get("adapter") for r in records if r["doc_id"] == doc.id}
        assert by_arm["icl-trunc"] is None and by_arm["icl-full"] is None
        assert by_arm["lift"] == by_arm["lift+icl"] != by_arm["raw-ft"]
        raw = store.read_meta(Path(next(a["path"] for a in absorbs
                                        if a["doc_id"] == doc.id and a["adapter"] == "raw-ft")))
        assert raw["settings"]["train"]["tasks"] == ["recite"]


def test_icl_full_is_skipped_exactly_where_the_document_does_not_fit(sample_run, lm):
    _, records, _ = sample_run
    by_key = {key(r): r for r in records}
    full = [r for r in records if r["arm"] == "icl-full"]
    skipped = [r for r in full if r["prediction"] is None]
    assert skipped and len(skipped) < len(full)  # the window splits the samples
    for r in full:
        fits = r["doc_tokens"] <= context_budget(lm.tokenizer, r["question"], WINDOW, MAX_TOKENS)
        trunc = by_key[(r["doc_id"], r["question_id"], "icl-trunc")]
        if fits:
            assert r["context"] == "full" and not r.get("skipped")
            # Same prompt, same base, greedy: the two arms must agree token for token.
            assert (r["prompt_tokens"], r["prediction"]) == (trunc["prompt_tokens"],
                                                             trunc["prediction"])
        else:
            assert r["skipped"].startswith(f"document has {r['doc_tokens']} tokens")
            assert r["scores"] == {} and trunc["context"] == "head+tail"


def test_arms_share_prompts(sample_run):
    _, records, _ = sample_run
    by_key = {key(r): r for r in records}
    for r in records:
        if r["arm"] == "lift+icl":  # the adapter arm sees the very prompt of icl-trunc
            trunc = by_key[(r["doc_id"], r["question_id"], "icl-trunc")]
            assert (r["prompt_tokens"], r["context"]) == (trunc["prompt_tokens"],
                                                          trunc["context"])
        if r["arm"] == "raw-ft":
            lift = by_key[(r["doc_id"], r["question_id"], "lift")]
            assert r["prompt_tokens"] == lift["prompt_tokens"] and r["context"] == "none"
        if r["arm"] == "lift+rag":  # the adapter reads the very passages the base reads
            rag = by_key[(r["doc_id"], r["question_id"], "rag")]
            assert (r["prompt_tokens"], r["context"], r.get("passages")) == (
                rag["prompt_tokens"], rag["context"], rag.get("passages"))
        if r["arm"] == "rag" and r["context"] == "passages":
            assert r["passages"] and r["prompt_tokens"] < 1024  # a short prefill
    assert any(r["arm"] == "rag" and r["context"] == "passages" for r in records)


def test_the_checked_arm_shows_the_memory_answer_only_where_a_passage_backs_it(sample_run):
    """`checked` answers as `--check` does: the adapter's answer from the question alone
    where a passage of the rag prompt backs it, else the plain base's answer from those
    passages; it costs the adapter's seconds, and the base's too where the base answers."""
    docs, records, _ = sample_run
    by_key = {key(r): r for r in records}
    texts = {d.id: d.document for d in docs}
    checked = [r for r in records if r["arm"] == "checked"]
    assert len(checked) == len([r for r in records if r["arm"] == "rag"]) > 0
    for r in checked:
        lift = by_key[(r["doc_id"], r["question_id"], "lift")]
        rag = by_key[(r["doc_id"], r["question_id"], "rag")]
        held = [Passage(a, b, texts[r["doc_id"]][a:b], ()) for a, b in rag.get("passages", [])]
        backed = backing(lift["prediction"], r["question"], held) is not None
        assert r["answered_by"] == ("memory" if backed else "reading")
        chosen = lift if backed else rag
        assert (r["prediction"], r["scores"]) == (chosen["prediction"], chosen["scores"])
        assert r["seconds"] == pytest.approx(lift["seconds"] + (0 if backed else rag["seconds"]),
                                             abs=1e-3)
        assert r.get("passages") == rag.get("passages") and r["adapter"] == lift["adapter"]


def test_asking_for_the_checked_arm_alone_answers_the_arms_it_is_made_of(lm, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("LIFT_MLX_HOME", str(tmp_path / "home"))
    docs = select(load_eval_set(SAMPLES / "native_sample.jsonl"), limit=2)
    settings = SETTINGS.replace(tasks=("recite",))
    records = run_eval(docs, lm, tmp_path / "out", arms=["checked"], settings=settings,
                       max_tokens=MAX_TOKENS, window=WINDOW)
    assert {r["arm"] for r in records} == {"checked"}
    assert len(records) == sum(len(d.questions) for d in docs) > 0
    kept = {r["arm"] for r in read_jsonl(tmp_path / "out" / RECORDS_FILE)}
    assert kept == {"lift", "rag", "checked"}  # on record, so a rerun resumes
    again = run_eval(docs, lm, tmp_path / "out", arms=["checked", "lift"], settings=settings,
                     max_tokens=MAX_TOKENS, window=WINDOW)
    assert [key(r) for r in again if r["arm"] == "checked"] == [key(r) for r in records]


def test_every_arm_answers_as_its_entry_says(sample_run):
    _, records, _ = sample_run
    assert {arm.adapter for arm in ARMS.values()} - {None} <= set(ADAPTERS)
    for r in records:
        arm = ARMS[r["arm"]]
        assert (r.get("adapter") is None) == (arm.adapter is None)
        if r["prediction"] is None:
            assert arm.whole  # only an arm that takes the whole document or nothing skips
        else:
            assert (r["context"] != "none") == arm.context


def test_an_arm_is_one_entry_of_the_table(lm, tmp_path, monkeypatch):
    """A new arm (here the plain base asked the question alone, as `base` is, under another
    name) runs, is summarised, and is offered and described by `lift-mlx eval` from its entry
    in ARMS alone."""
    monkeypatch.setitem(ARMS, "bare", Arm("the base model, the question alone"))
    docs = select(load_eval_set(SAMPLES / "native_sample.jsonl"), limit=1)
    records = run_eval(docs, lm, tmp_path / "out", arms=("bare", "icl-trunc"),
                       settings=SETTINGS, max_tokens=MAX_TOKENS, window=WINDOW)
    base = [r for r in records if r["arm"] == "bare"]
    assert len(base) == len(docs) and all("adapter" not in r for r in base)
    for r in base:
        bare = question_prompt(lm.tokenizer, r["question"], None, WINDOW, MAX_TOKENS)
        assert r["context"] == "none" and r["prompt_tokens"] == len(bare)
    assert list(summarize(records)) == ["icl-trunc", "bare"]  # the table's order
    command = eval_command()
    assert next(p for p in command.params if p.name == "arms").default == ",".join(ARMS)
    text = CliRunner().invoke(command, ["--help"]).output
    assert "[default: all ten]" in text  # nine arms and this one
    for name, arm in ARMS.items():
        assert f"  {name:<9}  {arm.help}" in text


def test_summary_means_match_the_records(sample_run):
    _, records, _ = sample_run
    summary = summarize(records)
    assert list(summary) == list(ARMS)
    for arm in ARMS:
        mine = [r for r in records if r["arm"] == arm]
        answered = [r for r in mine if r["prediction"] is not None]
        row = summary[arm]["all"]
        assert row["count"] == len(answered) and row["skipped"] == len(mine) - len(answered)
        f1 = [r["scores"]["f1"] for r in answered if "f1" in r["scores"]]
        assert row["scores"]["f1"] == pytest.approx(sum(f1) / len(f1))
        mc = [r for r in answered if r["choices"]]  # one multiple-choice question in the samples
        assert row["counts"].get("accuracy", 0) == len(mc) == (arm != "icl-full")
        musique = [r["scores"]["em"] for r in answered if r["type"] == "musique"]
        assert summary[arm]["musique"]["scores"]["em"] == pytest.approx(
            sum(musique) / len(musique))
        assert "judge" not in row


def test_summary_by_hand():
    def rec(arm, kind, prediction, **scores):
        return {"doc_id": "d", "question_id": f"q{len(records)}", "arm": arm, "type": kind,
                "prediction": prediction, "scores": scores, "seconds": 1.0}

    records = []
    for r in [("lift", "short", "x", dict(f1=0.5, em=0.0)),
              ("lift", "short", "y", dict(f1=1.0, em=1.0)),
              ("lift", "", "z", dict(f1=0.0, em=0.0, accuracy=1.0)),
              ("icl-full", "short", None, {})]:
        records.append(rec(r[0], r[1], r[2], **r[3]))
    judgements = [{"doc_id": "d", "question_id": "q0", "arm": "lift", "score": 1.0},
                  {"doc_id": "d", "question_id": "q2", "arm": "lift", "score": 0.0}]
    summary = summarize(records, judgements)
    assert summary["lift"]["short"]["scores"] == {"f1": 0.75, "em": 0.5}
    assert summary["lift"]["all"]["scores"] == {"f1": 0.5, "em": 1 / 3, "accuracy": 1.0}
    assert summary["lift"]["all"]["counts"] == {"f1": 3, "em": 3, "accuracy": 1}
    assert summary["lift"]["short"]["judge"] == 1.0 and summary["lift"]["short"]["judged"] == 1
    assert summary["lift"]["all"]["judge"] == 0.5  # its own field, apart from the scores
    assert summary["lift"]["untyped"]["count"] == 1
    assert summary["icl-full"]["short"] == {"count": 0, "skipped": 1, "seconds": None,
                                            "scores": {}, "counts": {}}
    table = format_summary(summary).splitlines()
    assert table[0].split() == ["arm", "type", "n", "skip", "f1", "em", "accuracy", "judge",
                                "s/answer"]
    assert table[1].split() == ["icl-full", "short", "0", "1", "-", "-", "-", "-", "-"]
    assert table[-1].split() == ["lift", "all", "3", "0", "50.0", "33.3", "100.0", "50.0",
                                 "1.00"]


class StopAfter(Progress):
    """Progress whose n-th answer update is a Ctrl-C: an interrupted run."""

    def __init__(self, n: int):
        super().__init__(quiet=True)
        self.left = n

    @contextmanager
    def bar(self, label, total, unit="tok"):
        def update(done, units=0, note="", total=None):
            if label == "answers":
                self.left -= 1
                if self.left == 0:
                    raise KeyboardInterrupt

        yield update


def test_interrupted_and_limited_runs_resume_without_redoing_anything(lm, tmp_path):
    docs = load_eval_set(SAMPLES / "loogle_sample.jsonl")
    out = tmp_path / "out"
    # Recite only: lift and raw-ft share one adapter, half the training of SETTINGS.
    run = dict(settings=preset("default", **FAST, tasks=("recite",)), max_tokens=MAX_TOKENS,
               window=WINDOW)
    first = run_eval(select(docs, limit=1), lm, out, **run)
    assert len(first) == 2 * len(ARMS)
    assert [a["reused"] for a in read_jsonl(out / "absorbs.jsonl")] == [False, True] * 2
    with pytest.raises(KeyboardInterrupt):  # dies in the second document
        run_eval(docs, lm, out, progress=StopAfter(13), **run)
    partial = read_jsonl(out / RECORDS_FILE)
    assert len(partial) == len(first) + 13  # it died right after writing the 13th
    assert partial[:len(first)] == first
    # A record half-written when the process died is dropped, not misread.
    with (out / RECORDS_FILE).open("a") as f:
        f.write('{"doc_id": "The Brindlewick')
    final = run_eval(docs, lm, out, **run)
    assert len(final) == 6 * len(ARMS)
    assert sorted(map(key, final)) == sorted({key(r) for r in final})  # no duplicates
    assert read_jsonl(out / RECORDS_FILE)[:len(partial)] == partial  # old records untouched
    absorbs = read_jsonl(out / "absorbs.jsonl")
    assert all(a["reused"] for a in absorbs[4:]) and len(absorbs) > 4  # store hits only
    again = run_eval(docs, lm, out, **run)
    assert again == final and len(read_jsonl(out / "absorbs.jsonl")) == len(absorbs)


def test_folder_of_another_model_or_settings_is_refused(lm, tmp_path):
    docs = select(load_eval_set(SAMPLES / "longbench_sample.jsonl"), limit=1)
    run_eval(docs, lm, tmp_path, arms=["icl-trunc"], max_tokens=MAX_TOKENS)
    with pytest.raises(LiftError, match="another max_tokens"):
        run_eval(docs, lm, tmp_path, arms=["icl-trunc"], max_tokens=MAX_TOKENS + 1)
    with pytest.raises(LiftError, match="no document with id 'nope'"):
        select(docs, ["nope"])
    with pytest.raises(LiftError, match="unknown arm"):
        run_eval(docs, lm, tmp_path, arms=["bm42"])
    with pytest.raises(LiftError, match="at most the model's window"):
        run_eval(docs, lm, tmp_path / "wide", window=lm.window + 1)


def test_summary_subset_without_a_question_asks_for_a_summary(lm, tmp_path):
    line = {"input": "", "context": "The council met twice in May. " * 20,
            "answers": ["The council met twice."], "dataset": "gov_report", "_id": "g1"}
    data = tmp_path / "gov_report.jsonl"
    data.write_text(json.dumps(line) + "\n")
    (r,) = run_eval(load_eval_set(data), lm, tmp_path / "out", arms=["icl-trunc"],
                    max_tokens=MAX_TOKENS)
    assert r["question"] == "Write a one-page summary of the document."
    assert r["context"] == "full" and "rouge_l" in r["scores"]


def test_local_judge_says_true_or_false_and_resumes(sample_run, lm):
    _, records, out = sample_run
    records = [r for r in records if r["arm"] in ("icl-full", "lift")]  # enough, and quicker
    judged = judge_records(records, lm, out)
    answered = [r for r in records if r["prediction"] is not None]
    assert {key(j) for j in judged} == {key(r) for r in answered}  # all sample Qs have refs
    for j in judged:
        assert j["score"] == verdict_score(j["reply"]) and j["judge"] == lm.name
    assert judge_records(records, lm, out) == judged  # nothing judged twice
    assert len(read_jsonl(out / JUDGEMENTS_FILE)) == len(judged)
    summary = summarize(records, judged)
    row = summary["lift"]["all"]
    assert row["judged"] == row["count"] and "judge" not in row["scores"]
    with (out / JUDGEMENTS_FILE).open("a") as f:
        f.write(json.dumps({**judged[0], "judge": "big", "judge_fingerprint": "x"}) + "\n")
    with pytest.raises(LiftError, match="was judged by 'big'"):
        judge_records(records, lm, out)


@pytest.mark.parametrize("reply, verdict", [("True", 1.0), ("true.", 1.0), (" TRUE\n", 1.0),
                                            ("False", 0.0), ("False, not True", 0.0),
                                            ("Untrue", 0.0), ("", 0.0), ("yes", 0.0)])
def test_verdicts(reply, verdict):
    assert verdict_score(reply) == verdict


def test_lengths_and_depths():
    assert parse_lengths("1k, 2K,4096") == [1024, 2048, 4096]
    assert parse_lengths("1.5k,0.5k") == [1536, 512]  # the bench's lengths parse here too
    assert parse_depths("0,0.5,1") == parse_depths("0%,50%,100%") == [0.0, 0.5, 1.0]
    for bad in ("1m", "0", ",", "1.5", "k"):
        with pytest.raises(LiftError):
            parse_lengths(bad)
    with pytest.raises(LiftError, match="bad depth"):
        parse_depths("half")


def test_cli_runs_resumes_and_summarises(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default results folder goes under ./eval-results
    runner = CliRunner()
    args = ["eval", str(SAMPLES / "native_sample.jsonl"), "--model", str(tiny_model_path),
            "--limit", "1", "--sequential", *FAST_ARGS]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    (out,) = (tmp_path / "eval-results").iterdir()
    assert out.name.startswith("native_sample-tiny-llama-")
    records = read_jsonl(out / RECORDS_FILE)
    assert len(records) == 2 * len(ARMS)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["summary"] == summarize(records) and saved["window"] == WINDOW
    assert r.stdout == format_summary(saved["summary"]) + "\n"
    # --tasks recite: lift and raw-ft are the same adapter, made once and then reused.
    absorbs = read_jsonl(out / "absorbs.jsonl")
    assert [a["reused"] for a in absorbs] == [False, True] * 2
    assert not any(a["pipeline"] for a in absorbs)  # --sequential reaches absorb

    r = runner.invoke(cli, [*args, "--docs", "fenwick-survey", "--arms", "lift,icl-trunc"])
    assert r.exit_code == 0, r.output
    assert len(read_jsonl(out / RECORDS_FILE)) == 2 * len(ARMS)  # all there already
    assert r.stdout.split("\n")[1].split()[:4] == ["icl-trunc", "untyped", "1", "0"]
    assert [line.split()[:2] for line in r.stdout.splitlines()[1:]] == [
        ["icl-trunc", "untyped"], ["lift", "untyped"]]  # no "all" row: one type only

    r = runner.invoke(cli, [*args, "--out", str(out), "--rank", "8"])
    assert r.exit_code == 1 and "another settings" in r.stderr
    # a folder written before a setting existed resumes: it was made as that setting's default
    run = json.loads((out / RUN_FILE).read_text())
    del run["settings"]["synth"]["cloze_phrasings"]
    (out / RUN_FILE).write_text(json.dumps(run))
    r = runner.invoke(cli, [*args, "--out", str(out), "--arms", "lift"])
    assert r.exit_code == 0, r.output
    assert len(read_jsonl(out / RECORDS_FILE)) == 2 * len(ARMS)  # resumed, nothing redone
    r = runner.invoke(cli, [*args, "--out", str(out), "--cloze-phrasings", "2"])
    assert r.exit_code == 1 and "another settings" in r.stderr
    r = runner.invoke(cli, [*args, "--docs", "nope"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "its ids: fenwick" in r.stderr
    r = runner.invoke(cli, [*args, "--arms", "lift,bm42"])
    assert r.exit_code == 2 and "--arms" in r.stderr


def test_cli_needle_in_a_haystack(tiny_model_path, tmp_path):
    out = tmp_path / "niah"
    r = CliRunner().invoke(cli, ["eval", "niah", "--model", str(tiny_model_path), "--lengths",
                                 "256,1k", "--depths", "0,50%", "--arms", "icl-trunc,icl-full",
                                 "--max-tokens", "4", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    records = read_jsonl(out / RECORDS_FILE)
    assert len(records) == 2 * 2 * 2
    assert {r["type"] for r in records} == {"niah-256", "niah-1k"}
    assert {r["meta"]["depth"] for r in records} == {0.0, 0.5}
    assert all("keyword_match" in r["scores"] for r in records if r["prediction"] is not None)
    # 1k tokens do not fit the tiny model's 1024-token window next to the prompt.
    assert {r["type"] for r in records if r["prediction"] is None} == {"niah-1k"}
    assert {r["meta"]["length"] for r in records} == {256, 1024}


def test_an_adapter_without_a_system_prompt_is_asked_as_it_was_trained(lm, tmp_path,
                                                                       monkeypatch):
    """The adapter arms build their prompts as the adapter's training samples were built
    (--system-prompt none: an empty system message); the plain base's arms keep the
    template's own."""
    from lift_mlx import prompts

    monkeypatch.setenv("LIFT_MLX_HOME", str(tmp_path / "home"))
    doc = load_eval_set(SAMPLES / "native_sample.jsonl")[0]
    settings = SETTINGS.replace(tasks=("recite",), system_prompt="none")
    records = run_eval([doc], lm, tmp_path / "out", arms=("lift", "lift+rag", "rag"),
                       settings=settings, max_tokens=MAX_TOKENS, window=WINDOW)
    tok = lm.tokenizer
    bare = prompts.prompt_tokenizer(tok, "none")
    by_key = {key(r): r for r in records}
    for q in doc.questions:
        lift = by_key[(doc.id, q.id, "lift")]
        asked = prompts.question_body(tok, lift["question"])
        assert lift["prompt_tokens"] == len(prompts.chat_ids(bare, asked))
        assert lift["context"] == "none"
        rag, both = by_key[(doc.id, q.id, "rag")], by_key[(doc.id, q.id, "lift+rag")]
        assert rag["context"] == both["context"] and rag.get("passages") == both.get("passages")
        block = len(prompts.encode(tok, "<|im_start|>system\n<|im_end|>\n"))
        assert both["prompt_tokens"] - rag["prompt_tokens"] == block
