"""`lift-mlx demo`: on the tiny model for the mechanics, on SmolLM2 for what it shows."""

import re
import shutil

from click.testing import CliRunner
from test_server import client, running

from lift_mlx import store
from lift_mlx.absorbed import load_absorbed
from lift_mlx.cli import cli
from lift_mlx.config import AnswerSettings
from lift_mlx.demo import QUESTIONS
from lift_mlx.serve.responses import sources_json

STAGES = ("model load", "split", "synthesize", "train", "base answers", "adapted answers")


def _run(*args):
    r = CliRunner().invoke(cli, ["demo", "--quiet", *args])
    assert r.exit_code == 0, r.output
    right = re.search(r"base (\d)/(\d), adapted (\d)/(\d)", r.stdout)
    assert right, r.stdout
    for stage in STAGES:
        assert f"{stage} " in r.stdout, stage
    assert r.stdout.count("    base      [") == len(QUESTIONS)
    assert store.is_adapter_dir(store.home() / "demo-adapter")
    return r.stdout, [int(g) for g in right.groups()]


def test_demo_on_the_tiny_model_shows_every_stage(tiny_model_path):
    _run("--model", str(tiny_model_path))


def test_demo_on_smollm2_answers_what_the_base_cannot(smollm2):
    """The demo's claim, measured: with the question alone, the base knows none of the
    document's facts and the adapted model knows most of them."""
    out, (base, n, adapted, _) = _run()
    print(out)
    assert n == len(QUESTIONS) == 3
    assert base == 0 and adapted >= 2, out
    checked_answers_show_the_passage_that_holds_them()


def checked_answers_show_the_passage_that_holds_them():
    """`ask --check` on the demo's adapter: each fact it answers right from memory is
    shown with the passage that holds it; an answer no passage backs is not shown, and the
    plain base answers from the passages instead, as `--no-use-adapter` answers."""
    adapter = store.home() / "demo-adapter"
    absorbed = load_absorbed(adapter)
    settings = AnswerSettings(use_adapter=True, check=True, max_tokens=32)
    right = 0
    for question, reference in QUESTIONS:
        memory, source = absorbed.check(question, settings)
        r = CliRunner().invoke(cli, ["ask", str(adapter), question, "--use-adapter", "--check",
                                     "--max-tokens", "32"])
        assert r.exit_code == 0, r.output
        if source is not None:
            assert r.stdout.strip() == memory.strip()
            assert "answered by the document's adapter, from memory" in r.stderr
            assert f"[chars {source.start:,}-{source.end:,}]" in r.stderr
            if reference in memory:
                right += 1
                assert reference in source.text  # the source a user checks it against
        else:
            assert "answered by the plain base model reading the passages" in r.stderr
            plain = absorbed.ask(question, settings, use_adapter=False)
            assert r.stdout.strip() == plain.strip()
    # The first keeper: "The first keeper was Tobias Wren" has two of the question's words
    # beside the answer. The 142 steps and the four pounds sit beside one of them only ("has
    # 142 steps", "a ticket costs four pounds"): those the plain base reads, right or wrong.
    assert right >= 1
    # A fact the document does not hold: whatever the adapter answers, no passage backs it.
    question = "Who painted the door of the Kestrel Point lighthouse?"
    memory, source = absorbed.check(question, settings)
    assert source is None, memory
    served_as_asked(absorbed, adapter)


def served_as_asked(absorbed, adapter):
    """The server's `"check": true` answers as `Absorbed` does, from memory with the backing
    passage as the one source, on the demo's real adapter (in the library for the server)."""
    shutil.copytree(adapter, store.adapters_dir() / absorbed.meta["key"])
    question, reference = QUESTIONS[1]
    memory, source = absorbed.check(question, AnswerSettings(max_tokens=32))
    assert source is not None and reference in memory  # the case this checks
    with running(absorbed.lm) as server:
        c = client(server)
        name = next(m.id for m in c.models.list().data if m.id != "smollm2")
        for stream in (False, True):
            reply = c.chat.completions.create(
                model=name, messages=[{"role": "user", "content": question}], max_tokens=32,
                stream=stream, extra_body={"use_adapter": True, "check": True})
            chunks = list(reply) if stream else [reply]
            text = ("".join(ch.choices[0].delta.content or "" for ch in chunks) if stream
                    else reply.choices[0].message.content)
            assert text == memory
            assert chunks[-1].model_extra["lift_sources"] == sources_json([source])
