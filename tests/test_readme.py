"""README.md and docs/: a user guide of bounded length whose links all resolve, whose quick start
is what CI runs, and whose measurements live in docs pages the README links to."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 420

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside code blocks and code spans, where a link is a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings: lower case, punctuation other
    than '-' and '_' dropped, spaces as '-'."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", FENCE.sub("", path.read_text(encoding="utf-8")),
                          re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def fenced_blocks(text: str) -> list[str]:
    return [block.split("\n", 1)[1].rsplit("```", 1)[0].strip()
            for block in FENCE.findall(text)]


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_the_readme_is_a_guide_of_at_most_420_lines():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_relative_link_points_to_a_file_that_exists():
    broken = []
    for page in [README, *DOCS]:
        for target in links(page):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_has_a_title_and_is_linked_from_the_readme():
    readme_links = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    assert len(DOCS) >= 5
    for page in DOCS:
        assert page.read_text(encoding="utf-8").startswith("# "), f"{page.name}: no title"
        assert page.resolve() in readme_links, f"README.md does not link to docs/{page.name}"


def test_the_quick_start_runs_the_demo_and_the_tests_ci_runs():
    text = README.read_text(encoding="utf-8")
    quick = section(text, "Quick start")
    demo, tests = fenced_blocks(quick)
    assert demo == "pip install -e . && lift-mlx demo"
    assert tests == "python3 -m pip install -q -e '.[test]' && python3 -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == tests  # CI runs exactly the README's test command, last
    # both commands come with the time they took, and the number of tests
    assert re.search(r"the demo command \d+ s", quick)
    assert re.search(r"the test command \d+ min \d+ s\s+\(\d+ tests\)", quick)


def test_the_experiment_table_lives_between_its_markers_in_its_docs_page():
    from conftest import load_script

    experiment = load_script("lift_experiment")
    page = (ROOT / "docs" / "lift-experiment.md").read_text(encoding="utf-8")
    start, end = page.index(experiment.README_START), page.index(experiment.README_END)
    assert start < end and page.count(experiment.README_START) == 1
    assert "| ~4k tokens | lift |" in page[start:end]
    assert experiment.README_START not in README.read_text(encoding="utf-8")
