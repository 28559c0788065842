"""Does LIFT work on a real model? Documents absorbed and asked about, generated and real.

A real pretrained model (SmolLM2-135M-Instruct by default) absorbs knowledge-world documents
(scripts/knowledge_world.py: fictional people, ships, towns and companies, with sentences that
state no fact between the facts) of about 4k and 8k tokens, and with --real the real documents
of scripts/data/real_docs (texts installed on the machine, with hand-written questions; see
its SOURCES.md), reported as a group of their own. The answer-time window is capped at
--window tokens (1,024), so most facts lie outside the view an in-context arm sees. Every
question is a held-out phrasing: never used by the oracle's tasks. The arms, through
lift-mlx's own evaluation (`lift_mlx.eval.run.run_eval`):

- base       the base model with the question alone: what it knows without the document,
             and what a question costs without it
- icl-full   the base model with the whole document in its own (8k) window: the reading bar
- icl-trunc  the base model with the head+tail view that fits --window
- raw-ft     an adapter trained on recite segments only (fine-tuning on the raw text)
- lift       an adapter trained on the model preset's tasks, made from the document alone:
             recite segments + QA tasks the model writes itself and/or cloze tasks made
             by rule (SmolLM2's preset: recite + cloze; --set 'tasks=[...]' to choose)
- lift+icl   the lift adapter with the head+tail view in the prompt
- rag        the base model with the passages that match the question (BM25), at most
             --retrieved-len tokens of them
- lift+rag   the lift adapter with the same passages
- checked    lift's answer where a passage of rag's prompt backs it (a sentence there holds
             it with two of the question's words near it), else rag's answer (`--check`)
- lift (oracle tasks)  recite + a perfect generator's QA tasks (each fact, asked once)

Scores: answer containment (the reference in the answer's first sentence; lift_mlx.metrics),
token F1 and exact match, split by whether the fact's sentence (a real document's evidence
sentence) lies inside the head+tail view of the in-context arms, and seconds per answer.
Memorised or learned: the lift adapter is also asked --own of its own training questions (the
cloze or phrases pairs it trained on), alone, to set beside the held-out ones.
Collateral damage: how many of the general questions the base answers right
(scripts/data/general_questions.jsonl) each adapter still answers. Documents, adapters and
answers are kept in --work; each finished document's rows in --out's records/ folder (a
small JSON per document, under the model and settings tag), so an interrupted run resumes, on
this machine or, from the committed records, on another. Prints a table; writes JSON, a PNG
and (--readme) the table into docs/lift-experiment.md.

    python scripts/lift_experiment.py                    # 3 documents each of ~4k and ~8k tokens
    python scripts/lift_experiment.py --lengths '' --real all --arms rag,lift,lift+rag
    python scripts/lift_experiment.py --lengths 1024 --docs 1 --set epochs=4   # a quick try
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from check_real_docs import squash  # noqa: E402  (evidence found as the checker finds it)
from knowledge_world import TEMPLATES, TRAIN_PHRASINGS, world_for_tokens  # noqa: E402

import lift_mlx  # noqa: E402,F401  (loads the optional BLAS before mlx.core)
from lift_mlx import prompts  # noqa: E402
from lift_mlx.answer import question_prompt  # noqa: E402
from lift_mlx.config import AnswerSettings  # noqa: E402
from lift_mlx.eval.datasets import EvalDoc, load_native  # noqa: E402
from lift_mlx.eval.metrics import answer_contains, exact_match, token_f1  # noqa: E402

ARMS = ("base", "icl-full", "icl-trunc", "raw-ft", "lift", "lift+icl", "rag", "lift+rag",
        "checked", "lift (oracle tasks)")
# answered within --window
WINDOW_ARMS = ("base", "icl-trunc", "raw-ft", "lift", "lift+icl", "rag", "lift+rag", "checked")
ORACLE = "lift (oracle tasks)"
REGIONS = ("inside", "outside", "all")
METRICS = {"contains": answer_contains, "f1": token_f1, "em": exact_match}
GENERAL = HERE / "data" / "general_questions.jsonl"
REAL = HERE / "data" / "real_docs"  # real documents with hand-written questions (SOURCES.md)
README_START, README_END = "<!-- lift-experiment:start -->", "<!-- lift-experiment:end -->"
WORLD_SEED = 5000  # documents' worlds: seed WORLD_SEED + 100 * k + i for length k x 1024


def parse_overrides(pairs: list[str]) -> dict:
    """`--set rank=8 --set lr=5e-4` -> {"rank": 8, "lr": 0.0005} (JSON values, else text)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes NAME=VALUE, got {pair!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def chars_per_token(tokenizer, filler: float) -> float:
    text = world_for_tokens(WORLD_SEED - 1, 20_000, filler).document()
    return len(text) / len(prompts.encode(tokenizer, text))


def make_doc(length: int, index: int, args, tokenizer, cpt: float, folder: Path):
    """The world and eval document (held-out phrasings) for document `index` of `length`."""
    world = world_for_tokens(WORLD_SEED + 100 * (length // 1024) + index, int(length * cpt),
                             args.filler)
    path = folder / "document.jsonl"
    world.to_native_jsonl(path, f"{length}-{index}", phrasings="heldout")
    return world, next(load_native(path))


def pick_questions(doc: EvalDoc, world, tokenizer, args, rng: random.Random) -> EvalDoc:
    """One held-out question per fact, then up to --questions with the fact's sentence inside
    the in-context arms' view and as many outside it; each question's region is read off the
    very prompt those arms build."""
    doc_tokens = prompts.encode(tokenizer, doc.document)
    by_fact: dict[tuple, list] = {}
    for q in doc.questions:
        by_fact.setdefault((q.meta["entity"], q.meta["attribute"]), []).append(q)
    one_each = [rng.choice(qs) for qs in by_fact.values()]
    for q in one_each:
        ids = question_prompt(tokenizer, q.question, doc_tokens, args.window, args.max_tokens)
        seen = world.fact_offsets(tokenizer.decode(ids))
        q.meta["region"] = "inside" if (q.meta["entity"], q.meta["attribute"]) in seen \
            else "outside"
    chosen = []
    for region in ("inside", "outside"):
        group = [q for q in one_each if q.meta["region"] == region]
        chosen += rng.sample(group, min(args.questions, len(group)))
    return EvalDoc(doc.id, doc.document, chosen, doc.source)


def real_doc(name: str, args, tokenizer) -> EvalDoc:
    """A real document of scripts/data/real_docs with its hand-written questions, each marked
    inside or outside the head+tail view by whether the view holds its evidence sentence."""
    path = REAL / f"{name}.jsonl"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in REAL.glob("*.jsonl")))
        raise SystemExit(f"no real document {name!r}; there are: {known}")
    doc = next(load_native(path))
    doc_tokens = prompts.encode(tokenizer, doc.document)
    for q in doc.questions:
        ids = question_prompt(tokenizer, q.question, doc_tokens, args.window, args.max_tokens)
        seen = squash(tokenizer.decode(ids))
        q.meta["region"] = "inside" if squash(q.meta["evidence"]) in seen else "outside"
    return doc


def oracle_pairs(world, rng: random.Random):
    """A perfect generator's tasks: every fact once, in a training phrasing."""
    from lift_mlx.generator_styles import QAPair

    return [QAPair(rng.choice(TEMPLATES[f.kind][f.attribute][1][:TRAIN_PHRASINGS])
                   .format(e=f.entity), f.value) for f in world.facts]


def write_oracle_cache(lm, doc: EvalDoc, settings, pairs) -> None:
    """Put `pairs` in the QA cache where `lift` looks for its self-written tasks."""
    from lift_mlx.ingest import text_document
    from lift_mlx.store import write_atomic
    from lift_mlx.synthesize import SynthReport
    from lift_mlx.tasks.qa import cache_file as qa_cache_file
    from lift_mlx.tasks.qa import cached_json

    path = qa_cache_file(text_document(doc.document).sha256, lm, settings)
    write_atomic(path, cached_json(pairs, SynthReport(kept=len(pairs))))


def general_questions() -> list[dict]:
    return [json.loads(line) for line in GENERAL.read_text().splitlines() if line.strip()]


def answers_alone(lm, adapter: str | None, questions: list[str], max_tokens: int) -> list[str]:
    """The answer to each of `questions`, asked alone (decoded together, greedy), with
    `adapter` (a stored adapter's folder) on the model, or the plain base."""
    from mlx_lm import batch_generate

    from lift_mlx.absorbed import load_absorbed, reset_adapter

    prompting = load_absorbed(adapter, lm).prompting if adapter else lm.tokenizer
    try:
        ids = [question_prompt(prompting, q, None, lm.window, max_tokens) for q in questions]
        return batch_generate(lm.model, lm.tokenizer, ids, max_tokens=max_tokens).texts
    finally:
        reset_adapter(lm)


def answer_general(lm, adapter: str | None, max_tokens: int) -> list[float]:
    """Containment score of every general question (`answers_alone`), with `adapter` on the
    model, or the plain base."""
    questions = general_questions()
    texts = answers_alone(lm, adapter, [q["question"] for q in questions], max_tokens)
    return [answer_contains(t, q["answers"]) for t, q in zip(texts, questions)]


def ask_alone(lm, adapter: str, pairs: list[tuple[str, list[str]]], max_tokens: int) -> dict:
    """The adapter asked each question of `pairs` (question, references) alone, as `lift`
    asks the held-out ones (`answers_alone`): how many it answers right, and the first
    answers."""
    texts = answers_alone(lm, adapter, [q for q, _ in pairs], max_tokens)
    scores = [answer_contains(t, refs) for t, (_, refs) in zip(texts, pairs)]
    return {"right": sum(scores), "of": len(pairs),
            "examples": [{"question": q, "answers": refs, "prediction": t, "right": s}
                         for (q, refs), t, s in list(zip(pairs, texts, scores))[:8]]}


def training_pairs(document: str, settings) -> tuple[list[str], list]:
    """The rule-made tasks (cloze, phrases) among those `settings` train on, and their
    question/answer pairs for `document`."""
    from lift_mlx.tasks import tasks_named

    made = [t for t in tasks_named(tuple(settings.train.tasks)) if hasattr(t, "pairs")]
    return [t.name for t in made], [p for t in made
                                    for p in t.pairs(document, settings.synth.window_chars)]


def own_questions(lm, adapter: str, made: tuple[list[str], list], n: int,
                  max_tokens: int) -> dict | None:
    """The `lift` adapter asked `n` of its own training questions, picked at random among
    the pairs of the rule-made tasks it trained on (`made`: `training_pairs`), each alone:
    whether it learned its tasks, to set beside how it answers questions in other words.
    None where it trained on no such task."""
    tasks, pairs = made
    if not pairs or n < 1:
        return None
    pairs = random.Random(0).sample(pairs, min(n, len(pairs)))
    asked = ask_alone(lm, adapter, [(p.question, [p.answer]) for p in pairs], max_tokens)
    return {**asked, "tasks": tasks}


def covered(pairs: list, records: list[dict]) -> dict:
    """How many of the held-out questions (`records`) have an answer (any case) that some
    training question of the rule-made tasks (`pairs`) asks for: the facts the tasks teach as
    answers."""
    answers = {p.answer.lower() for p in pairs}
    hit = sum(any(ref.lower() in answers for ref in r["references"]) for r in records)
    return {"covered": hit, "of": len(records)}


def evidence_sentence(document: str, meta: dict) -> str | None:
    """The sentence a held-out question was written from: a real document's `evidence`, or
    the knowledge-world sentence at its `char_offset`."""
    from lift_mlx.split import sentence_spans

    if "evidence" in meta:
        return meta["evidence"]
    at = meta.get("char_offset")
    return next((document[a:b] for a, b in sentence_spans(document) if a <= at < b), None)


def echoed_questions(lm, adapter: str, document: str, records: list[dict],
                     max_tokens: int) -> dict | None:
    """The `lift` adapter asked the held-out questions' facts in the document's own words:
    each question's evidence sentence asked back for its answer as the cloze task asks
    (`echo_question`), alone. Beside `lift` (the same facts asked in other words), it tells a
    fact the adapter does not hold from one it holds but cannot reach from a rewording. None
    where no sentence holds its answer."""
    from lift_mlx.tasks.cloze import echo_question

    pairs = []
    for r in records:
        sentence = evidence_sentence(document, r["meta"])
        for ref in r["references"] if sentence else []:
            if question := echo_question(sentence, ref):
                pairs.append((question, r["references"]))
                break
    return ask_alone(lm, adapter, pairs, max_tokens) if pairs else None


def add_own(result: dict, lm, args, settings, done: Path, folder: Path) -> dict:
    """`result` (a document's record) with its `lift` adapter's `own_questions`,
    `echoed_questions` and `covered` (the latter two from the `lift` records in `folder`),
    asked and kept in its record file where they are not there yet and the adapter still
    is."""
    from lift_mlx.eval.records import read_jsonl
    from lift_mlx.store import DOCUMENT_FILE, write_atomic

    run = result["run"]
    if args.own < 1 or all(k in run for k in ("own", "echoed", "covered")) or args.recorded:
        return result
    absorb = next((a for a in run["absorbs"] if a["adapter"] == "lift"), None)
    if absorb is None or not Path(absorb["path"]).is_dir():
        return result
    document = (Path(absorb["path"]) / DOCUMENT_FILE).read_text(encoding="utf-8")
    made = training_pairs(document, settings)
    if "own" not in run:
        run["own"] = own_questions(lm, absorb["path"], made, args.own, args.max_tokens)
    asked = [r for r in read_jsonl(folder / "window" / "records.jsonl") if r["arm"] == "lift"]
    if "echoed" not in run:
        run["echoed"] = echoed_questions(lm, absorb["path"], document, asked, args.max_tokens)
    run["covered"] = covered(made[1], asked)
    write_atomic(done, json.dumps(result, indent=1))
    return result


def format_own(runs: list[dict]) -> str:
    """One line per document: its `lift` adapter on its own training questions, how many
    held-out answers those ask for, and the adapter on the held-out facts asked in the
    document's words."""
    lines = []
    for run in runs:
        own, echoed = run.get("own"), run.get("echoed")
        if own:
            line = (f"{run['doc']}: lift answers {own['right']:.0f} of {own['of']} of its own "
                    f"training questions ({', '.join(own['tasks'])})")
            if cover := run.get("covered"):
                line += (f"; {cover['covered']} of {cover['of']} held-out answers are answers "
                         f"of its training questions")
            if echoed:
                line += (f", {echoed['right']:.0f} of {echoed['of']} held-out facts asked in "
                         f"the document's words")
            lines.append(line + ", each asked alone")
    return "\n".join(lines)


def gate_values(lm, adapter: str, doc: EvalDoc, max_tokens: int) -> dict | None:
    """For a Gated Memory adapter: the mean gate (over layers, heads and the prompt's tokens,
    and at the prompt's last token, where the answer starts) on the document's questions and on
    the general questions, asked as `ask --no-context` asks. None for other kinds."""
    from lift_mlx import adapters
    from lift_mlx.absorbed import load_absorbed, reset_adapter
    from lift_mlx.adapters import gated

    if adapters.kind_of(Path(adapter)) is not gated.GATED:
        return None
    prompting = load_absorbed(adapter, lm).prompting
    try:
        out = {}
        for name, questions in (("document", [q.question for q in doc.questions]),
                                ("general", [q["question"] for q in general_questions()])):
            values = [gated.gate_values(lm.model, question_prompt(
                prompting, q, None, lm.window, max_tokens)) for q in questions]
            out[name] = {"mean": statistics.mean(v.mean().item() for v in values),
                         "last_token": statistics.mean(v[:, :, -1].mean().item()
                                                       for v in values),
                         "questions": len(values)}
        return out
    finally:
        reset_adapter(lm)


def settings_tag(settings, args) -> str:
    """What a run's records are filed under: the settings that shape the adapter (not, e.g.,
    --micro-batch or --checkpoint-every) and the experiment's own."""
    fields = [settings.keyed(), args.window, args.max_tokens, args.filler, args.questions]
    answer = AnswerSettings()
    if (args.retrieved_len, args.passage_len) != (answer.retrieved_len, answer.passage_len):
        fields.append([args.retrieved_len, args.passage_len])  # earlier tags stay as they were
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_doc(lm, spec: tuple, args, settings, work: Path, cpt: float,
            base_general: list[float], records: Path) -> dict:
    """Every arm on one document: `spec` is ("world", length, index) for a knowledge-world
    document or ("real", name) for a real one. Returns its rows and run record and keeps them
    in `records` (one small JSON per document, next to results.json, so that the table can be
    rebuilt and a run resumed on another machine without the work folder's adapters)."""
    from lift_mlx.eval.records import read_jsonl
    from lift_mlx.eval.run import run_eval
    from lift_mlx.progress import Progress
    from lift_mlx.store import write_atomic

    name = doc_name(spec)
    folder = work / name
    done = records / f"{name}.json"
    if done.exists():
        return add_own(json.loads(done.read_text()), lm, args, settings, done, folder)
    folder.mkdir(parents=True, exist_ok=True)
    if spec[0] == "world":
        length, index = spec[1], spec[2]
        group = length
        world, doc = make_doc(length, index, args, lm.tokenizer, cpt, folder)
        doc = pick_questions(doc, world, lm.tokenizer, args, random.Random(index))
        facts = len(world.facts)
    else:
        world, index, group = None, 0, "real"
        doc = real_doc(spec[1], args, lm.tokenizer)
        facts = len(doc.questions)
    n_tokens = len(prompts.encode(lm.tokenizer, doc.document))
    length = n_tokens if world is None else length
    inside = sum(q.meta["region"] == "inside" for q in doc.questions)
    print(f"== {doc.id}: {n_tokens} tokens, {facts} facts, {inside} questions "
          f"inside the {args.window}-token view, {len(doc.questions) - inside} outside",
          flush=True)
    progress = Progress(quiet=not args.verbose)
    start = time.perf_counter()
    records, absorbs, seconds = [], [], {}
    arms = [a for a in args.arms if a in WINDOW_ARMS]
    home = os.environ["LIFT_MLX_HOME"]
    if arms:
        t = time.perf_counter()
        records += run_eval([doc], lm, folder / "window", arms=arms, settings=settings,
                            max_tokens=args.max_tokens, window=args.window, pipeline=False,
                            progress=progress, answer=answer_settings(args))
        absorbs += read_jsonl(folder / "window" / "absorbs.jsonl")
        seconds["window arms"] = time.perf_counter() - t
    if "icl-full" in args.arms:
        t = time.perf_counter()
        records += run_eval([doc], lm, folder / "full", arms=["icl-full"], settings=settings,
                            max_tokens=args.max_tokens, progress=progress)
        seconds["icl-full"] = time.perf_counter() - t
    if ORACLE in args.arms and world is not None:
        t = time.perf_counter()
        os.environ["LIFT_MLX_HOME"] = str(work / "home-oracle")  # its QA cache is replaced
        try:
            # recite + the oracle's pairs, whatever tasks the preset trains `lift` on
            oracle_settings = settings.replace(tasks=("recite", "qa"))
            write_oracle_cache(lm, doc, oracle_settings,
                               oracle_pairs(world, random.Random(index)))
            oracle = run_eval([doc], lm, folder / "oracle", arms=["lift"],
                              settings=oracle_settings,
                              max_tokens=args.max_tokens, window=args.window, pipeline=False,
                              progress=progress)
        finally:
            os.environ["LIFT_MLX_HOME"] = home
        records += [{**r, "arm": ORACLE} for r in oracle]
        absorbs += [{**a, "adapter": ORACLE} for a in
                    read_jsonl(folder / "oracle" / "absorbs.jsonl") if a["adapter"] == "lift"]
        seconds["oracle"] = time.perf_counter() - t
    general = {}
    if args.general:
        t = time.perf_counter()
        from lift_mlx.answer import about_document

        general["base"] = base_general
        # Routed as `ask` routes: questions not about the document go to the plain base.
        to_adapter = [about_document(q["question"], doc.document) for q in general_questions()]
        for a in absorbs:
            scores = answer_general(lm, a["path"], args.max_tokens)
            general[a["adapter"]] = scores
            general[a["adapter"] + " (routed)"] = [
                s if routed else b for s, b, routed in zip(scores, base_general, to_adapter)]
        seconds["general"] = time.perf_counter() - t
    gates = {a["adapter"]: g for a in absorbs
             if (g := gate_values(lm, a["path"], doc, args.max_tokens)) is not None}
    rows = [{"length": length, "group": group, "doc": doc.id, "arm": r["arm"],
             "region": r["meta"]["region"], "seconds": r.get("seconds"),
             **{m: fn(r["prediction"] or "", r["references"]) for m, fn in METRICS.items()}}
            for r in records if r["prediction"] is not None]
    run = {"length": length, "group": group, "doc": doc.id, "doc_tokens": n_tokens,
           "facts": facts,
           "questions": len(doc.questions), "inside": inside,
           "seconds": round(time.perf_counter() - start, 1),
           "phase_seconds": {k: round(v, 1) for k, v in seconds.items()}, "absorbs": absorbs,
           "general": general, "gates": gates,
           "examples": [{k: r[k] for k in ("arm", "question", "references", "prediction")}
                        for r in records[:: max(1, len(records) // 16)]]}
    result = {"run": run, "rows": rows}
    write_atomic(done, json.dumps(result, indent=1))
    return add_own(result, lm, args, settings, done, folder)


def doc_specs(args) -> list[tuple]:
    """The documents of a run: --docs knowledge-world documents of each of --lengths (one
    count for all, or one per length), then the --real ones."""
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
        counts = [int(n) for n in str(args.docs).split(",")]
    except ValueError:
        raise SystemExit(f"--lengths {args.lengths!r} --docs {args.docs!r}: whole numbers, "
                         "separated by commas") from None
    if len(counts) == 1:
        counts *= len(lengths)
    if len(counts) != len(lengths) or min(counts, default=0) < 0:
        raise SystemExit(f"--docs {args.docs}: one count, or one per length of --lengths "
                         f"({len(lengths)})")
    specs = [("world", length, i) for length, n in zip(lengths, counts) for i in range(n)]
    names = ([p.stem for p in sorted(REAL.glob("*.jsonl"))] if args.real == "all"
             else [n.strip() for n in args.real.split(",") if n.strip()])
    return specs + [("real", name) for name in names]


def doc_name(spec: tuple) -> str:
    """Where a document's work and record are filed: doc-LENGTH-INDEX or real-NAME."""
    return f"doc-{spec[1]}-{spec[2]}" if spec[0] == "world" else f"real-{spec[1]}"


def answer_settings(args):
    """The retrieved passages' sizes the run answers with (the defaults unless set)."""
    return AnswerSettings(retrieved_len=args.retrieved_len, passage_len=args.passage_len)


def _spread(per_doc: list[float]) -> dict:
    return {"mean": statistics.mean(per_doc),
            "stdev": statistics.stdev(per_doc) if len(per_doc) > 1 else 0.0,
            "per_doc": per_doc}


def group_of(row: dict):
    """A row's or run's group: its length in tokens (knowledge-world documents of one size) or
    "real" (the real documents, whatever their length)."""
    return row.get("group", row["length"])


def label(group) -> str:
    return f"~{group // 1024}k tokens" if isinstance(group, int) else f"{group} documents"


def _groups(rows: list[dict]) -> list:
    found = {group_of(r) for r in rows}
    return sorted(found, key=lambda g: (isinstance(g, str), str(g) if isinstance(g, str) else g))


def summarize(rows: list[dict]) -> dict:
    """group -> arm -> region -> metric -> {mean, stdev, per_doc} (scores in [0, 1]), and
    region -> "n" (questions); the mean is over documents, each its own accuracy; "all" also
    holds "seconds", the mean time per answer (where the rows have it)."""
    out: dict = {}
    for group in _groups(rows):
        mine_g = [r for r in rows if group_of(r) == group]
        out[group] = {}
        docs = sorted({r["doc"] for r in mine_g})
        for arm in [a for a in ARMS if any(r["arm"] == a for r in mine_g)]:
            out[group][arm] = {}
            for region in REGIONS:
                mine = [r for r in mine_g if r["arm"] == arm and region in ("all", r["region"])]
                per_doc = {d: [r for r in mine if r["doc"] == d] for d in docs}
                per_doc = {d: rs for d, rs in per_doc.items() if rs}
                if not per_doc:
                    continue
                cell = {m: _spread([statistics.mean(r[m] for r in rs)
                                    for rs in per_doc.values()]) for m in METRICS}
                cell["n"] = len(mine)
                timed = [r["seconds"] for r in mine if r.get("seconds") is not None]
                if timed:
                    cell["seconds"] = statistics.mean(timed)
                out[group][arm][region] = cell
    return out


def summarize_general(runs: list[dict]) -> dict:
    """group -> adapter -> {kept, of, share}: the general questions the base answers right
    that each adapter still answers right, summed over documents."""
    out: dict = {}
    for run in runs:
        general = run.get("general") or {}
        base = general.get("base")
        if not base:
            continue
        right = [i for i, s in enumerate(base) if s]
        per = out.setdefault(group_of(run), {})
        for name, scores in general.items():
            if name == "base":
                continue
            cell = per.setdefault(name, {"kept": 0, "of": 0})
            cell["kept"] += sum(scores[i] for i in right)
            cell["of"] += len(right)
        cell = per.setdefault("base", {"kept": 0, "of": 0})
        cell["kept"] += len(right)
        cell["of"] += len(base)
    for per in out.values():
        for cell in per.values():
            cell["share"] = cell["kept"] / cell["of"] if cell["of"] else 0.0
    return out


def _pct(cell: dict | None, metric: str = "contains") -> str:
    if not cell:
        return "-"
    v = cell[metric]
    return f"{100 * v['mean']:.0f} ± {100 * v['stdev']:.0f}"


def format_table(summary: dict, general: dict) -> str:
    lines = ["| documents | arm | fact inside the view | fact outside | all | F1 (all) | "
             "EM (all) | s per answer | general questions kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group, arms in summary.items():
        for arm, regions in arms.items():
            g = general.get(group, {}).get(arm)
            routed = general.get(group, {}).get(arm + " (routed)")
            kept = f"{g['kept']:.0f}/{g['of']}" if g else "-"
            if routed:
                kept += f" ({routed['kept']:.0f} routed)"
            seconds = regions.get("all", {}).get("seconds")
            lines.append(f"| {label(group)} | {arm} | "
                         f"{_pct(regions.get('inside'))} | {_pct(regions.get('outside'))} | "
                         f"{_pct(regions.get('all'))} | {_pct(regions.get('all'), 'f1')} | "
                         f"{_pct(regions.get('all'), 'em')} | "
                         f"{'-' if seconds is None else f'{seconds:.1f}'} | {kept} |")
    return "\n".join(lines)


def default_arm(model: str) -> str:
    """The arm that answers as `ask` does by default on `model` (models/presets.json's
    measured "answer": the plain base reading the passages, the adapter checked against
    them, or the adapter with the context its default answer settings give)."""
    from lift_mlx.eval.arms import ARMS as EVAL_ARMS
    from lift_mlx.presets import adapter_answers, adapter_checks

    answer = AnswerSettings()
    if not adapter_answers(model):
        return "rag" if answer.retrieve else "icl-trunc"
    if adapter_checks(model) and answer.context and answer.retrieve:
        return next(name for name, arm in EVAL_ARMS.items() if arm.checks)
    return next(name for name, arm in EVAL_ARMS.items()
                if arm.adapter == "lift" and arm.context == answer.context
                and arm.retrieve == (answer.context and answer.retrieve) and not arm.checks)


def _mean(summary: dict, group, arm: str, region: str) -> float | None:
    cell = summary.get(group, {}).get(arm, {}).get(region)
    return None if cell is None else 100 * cell["contains"]["mean"]


def _gap(summary: dict, group, a: str, ra: str, b: str, rb: str, margin: float):
    x, y = _mean(summary, group, a, ra), _mean(summary, group, b, rb)
    if x is None or y is None:
        return None
    return {"length": group, "target": f"{a} ({ra}) >= {b} ({rb}) + {margin}",
            "value": round(x - y - margin, 1), "met": x >= y + margin}


def _seconds(summary: dict, group, arm: str) -> float | None:
    return summary.get(group, {}).get(arm, {}).get("all", {}).get("seconds")


def _time_ratio(summary: dict, group, a: str, b: str, most: float):
    """Arm `a`'s seconds per answer against `b`'s: at most `most` times as long."""
    x, y = _seconds(summary, group, a), _seconds(summary, group, b)
    if x is None or not y:
        return None
    return {"length": group, "target": f"{a} s per answer <= {most:g}x {b}'s",
            "value": round(x / y, 2), "unit": "x", "met": x <= most * y}


def margin(check: dict) -> str:
    """A target's measured value as its line shows it: points over the margin, or a ratio."""
    if check.get("unit") == "x":
        return f"measured {check['value']:.2f}x"
    return f"margin {check['value']:+.1f} points"


def targets(summary: dict, general: dict, model: str) -> list[dict]:
    """The targets, each met or missed, in points of answer containment (the time per answer:
    a ratio, "unit" "x"); "length" is the group (a length in tokens, or "real")."""
    from lift_mlx.eval.arms import ARMS as EVAL_ARMS

    checks = []
    default = default_arm(model)
    alone = "lift" if EVAL_ARMS[default].adapter else "base"
    for group in summary:
        checks += [c for c in (
            _gap(summary, group, "lift", "outside", "icl-trunc", "outside", 10),
            _gap(summary, group, "lift", "all", "raw-ft", "all", 10),
            _gap(summary, group, "lift+icl", "inside", "icl-trunc", "inside", 0),
            _gap(summary, group, "lift", "all", "icl-full", "all", 0),
            _gap(summary, group, default, "all", "rag", "all", 10) if default != "rag" else None,
            _gap(summary, group, default, "all", "lift", "all", 5) if default != "lift" else None,
            _gap(summary, group, "lift+rag", "inside", "icl-trunc", "inside", 0),
            _gap(summary, group, "lift", "all", "rag", "all", 0) if group == "real" else None,
            # the same model asked the question alone: the plain base, or the adapter
            _time_ratio(summary, group, default, alone, 2.0),
        ) if c]
        for name in ("lift", "lift (routed)"):
            g = general.get(group, {}).get(name)
            if g:
                checks.append({"length": group,
                               "target": f"{name} keeps >= 90% of general questions",
                               "value": round(100 * g["share"] - 90, 1),
                               "met": g["share"] >= 0.9})
    return checks


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(summary)
    fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 3.8), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        arms = summary[length]
        width = 0.8 / max(1, len(arms))
        for i, (arm, regions) in enumerate(arms.items()):
            means = [100 * regions[r]["contains"]["mean"] if r in regions else 0
                     for r in REGIONS]
            errs = [100 * regions[r]["contains"]["stdev"] if r in regions else 0
                    for r in REGIONS]
            xs = [x + (i - (len(arms) - 1) / 2) * width for x in range(len(REGIONS))]
            ax.bar(xs, means, width, yerr=errs, label=arm, capsize=2)
        ax.set_xticks(range(len(REGIONS)))
        ax.set_xticklabels(["fact inside\nthe 1k view", "fact outside", "all"])
        ax.set_ylim(0, 100)
        ax.set_ylabel("answer contains the fact (%)")
        ax.set_title(label(length))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def rebuild_arguments(argv: list[str]) -> list[str]:
    """The command's arguments less `--work`: a scratch folder of this machine, which changes
    no result, has no place in the command a reader copies to rebuild the table."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--work":
            skip = True
        elif not arg.startswith("--work="):
            out.append(arg)
    return out


def write_readme(table: str, checks: list[dict], args, result: dict) -> None:
    """The table, the targets and the command that made them, between the markers of
    docs/lift-experiment.md (the page the README links to; the flag kept its old name)."""
    page = ROOT / "docs" / "lift-experiment.md"
    text = page.read_text()
    if README_START not in text:
        print(f"{page.relative_to(ROOT)} has no {README_START} marker: table not written there")
        return
    lines = [README_START, "", table, ""]
    lines += [f"- {'met' if c['met'] else 'missed'}: {c['target']} on {label(c['length'])} "
              f"({margin(c)})" for c in checks]
    docs = {group: len({r["doc"] for r in result["rows"] if group_of(r) == group})
            for group in result["summary"]}
    counts = ", ".join(f"{n} of {label(k)}" for k, n in docs.items())
    out = Path(args.out).resolve()
    where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    lines += ["", f"Documents: {counts}; model {result['model']}, window {args.window}, "
              f"answers of at most {args.max_tokens} tokens, settings tag `{result['tag']}` "
              f"(everything in `{where}/results.json`, each document's rows in "
              f"`{where}/records/`); made by `python scripts/lift_experiment.py "
              f"{' '.join(rebuild_arguments(sys.argv[1:]))}`."]
    if (out / "lift_experiment.png").exists():
        image = Path(os.path.relpath(out / "lift_experiment.png", page.parent)).as_posix()
        lines += ["", f"![answer containment per arm and region]({image})"]
    lines += ["", README_END]
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    page.write_text(text[:start] + "\n".join(lines) + text[end:])


def arguments() -> argparse.ArgumentParser:
    """The script's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--lengths", default="4096,8192", help="document lengths in tokens")
    parser.add_argument("--docs", default="3",
                        help="documents per length: one count, or one per length (4,2)")
    parser.add_argument("--real", default="",
                        help="real documents of scripts/data/real_docs (comma-separated names, "
                        "or 'all'), after the knowledge-world ones (--lengths '' for none)")
    parser.add_argument("--retrieved-len", type=int, default=AnswerSettings().retrieved_len,
                        help="most tokens of retrieved passages in the rag arms' prompts")
    parser.add_argument("--passage-len", type=int, default=AnswerSettings().passage_len,
                        help="tokens per retrieved passage")
    parser.add_argument("--window", type=int, default=1024, help="answer-time window (tokens)")
    parser.add_argument("--questions", type=int, default=20,
                        help="questions per region (inside/outside the view) and document")
    parser.add_argument("--max-tokens", type=int, default=24, help="answer budget")
    parser.add_argument("--filler", type=float, default=2.0,
                        help="sentences without a fact per fact sentence")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting over the model's preset (repeatable)")
    parser.add_argument("--no-general", dest="general", action="store_false",
                        help="skip the general questions")
    parser.add_argument("--own", type=int, default=40,
                        help="training questions of its own (cloze, phrases) the lift adapter "
                             "is asked per document, beside the held-out ones (0: none)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "lift_experiment"))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "lift-experiment"),
                        help="documents, adapters and records (a rerun resumes from them)")
    parser.add_argument("--recorded", action="store_true",
                        help="run nothing: the table from the documents already recorded "
                        "(under --out), skipping the others")
    parser.add_argument("--readme", action="store_true",
                        help="write the table into docs/lift-experiment.md, which the README "
                             "links to")
    parser.add_argument("--verbose", action="store_true", help="absorb's progress bars")
    return parser


def main() -> None:
    args = arguments().parse_args()
    args.arms = [a.strip() for a in args.arms.split(",")]
    bad = [a for a in args.arms if a not in ARMS]
    if bad:
        raise SystemExit(f"unknown arm {bad[0]!r}; choose from {', '.join(ARMS)}")

    from lift_mlx.config import preset
    from lift_mlx.models import load_model
    from lift_mlx.presets import recommended_settings

    work = Path(args.work)
    os.environ.setdefault("LIFT_MLX_HOME", str(work / "home"))
    lm = load_model(args.model)
    settings = preset("default", recommended_settings(lm.name), **parse_overrides(args.set))
    tag = settings_tag(settings, args)
    work = work / f"{re.sub(r'[^A-Za-z0-9.-]', '_', lm.name)}-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(settings.to_dict(), indent=1))
    records = Path(args.out) / "records" / work.name
    if not args.recorded:  # what the tag stands for, beside its records (scripts/token_curve.py)
        records.mkdir(parents=True, exist_ok=True)
        (records / "settings.json").write_text(json.dumps(settings.to_dict(), indent=1))
    print(f"{lm.name}: settings tag {tag}, work folder {work}, records {records}", flush=True)
    cpt = chars_per_token(lm.tokenizer, args.filler)
    base_general = []
    if args.general and not args.recorded:  # each record holds the base's answers too
        key = hashlib.sha256(GENERAL.read_bytes()).hexdigest()[:10]
        cached = work / f"general-base-{key}.json"  # a new list of questions: answered anew
        if not cached.exists():
            cached.write_text(json.dumps(answer_general(lm, None, args.max_tokens)))
        base_general = json.loads(cached.read_text())
        print(f"the base answers {sum(base_general):.0f} of {len(base_general)} general "
              f"questions", flush=True)
    start = time.perf_counter()
    done = []
    for spec in doc_specs(args):
        if args.recorded and not (records / f"{doc_name(spec)}.json").exists():
            print(f"{doc_name(spec)}: not recorded, skipped", flush=True)
            continue
        done.append(run_doc(lm, spec, args, settings, work, cpt, base_general, records))
        rows = [r for d in done for r in d["rows"]]
        print(format_table(summarize(rows), summarize_general([d["run"] for d in done])),
              flush=True)
    rows = [r for d in done for r in d["rows"]]
    runs = [d["run"] for d in done]
    summary, general = summarize(rows), summarize_general(runs)
    table = format_table(summary, general)
    checks = targets(summary, general, args.model)
    print(f"\nAnswer contains the fact (%), mean ± stdev over documents "
          f"({time.perf_counter() - start:.0f} s):\n{table}")
    if own := format_own(runs):
        print(own)
    for c in checks:
        print(f"{'met   ' if c['met'] else 'MISSED'} {c['target']} ({label(c['length'])}): "
              f"{margin(c)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": lm.name, "tag": tag, "window": args.window,
              "max_tokens": args.max_tokens, "filler": args.filler,
              "settings": settings.to_dict(), "summary": summary, "general": general,
              "targets": checks, "runs": runs, "rows": rows, "table": table}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    try:
        if summary:  # nothing run or recorded: no figure
            plot(summary, out / "lift_experiment.png")
    except ImportError:
        print("matplotlib is not installed (pip install 'lift-mlx[plot]'): no PNG")
    if args.readme:
        write_readme(table, checks, args, result)
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
