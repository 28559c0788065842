import json

import pytest
from conftest import load_script

knowledge_world = load_script("knowledge_world")
TEMPLATES, TRAIN_PHRASINGS = knowledge_world.TEMPLATES, knowledge_world.TRAIN_PHRASINGS
Fact, World, world_for_tokens = (knowledge_world.Fact, knowledge_world.World,
                                 knowledge_world.world_for_tokens)


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(seed=7, n_entities=120)


def sentence_at(document: str, offset: int) -> str:
    return document[offset:document.index(".", offset) + 1]


def test_same_seed_gives_identical_world(world):
    again = World.generate(seed=7, n_entities=120)
    assert again.document(3) == world.document(3)
    assert again.questions("all") == world.questions("all")
    assert world.document(3) != world.document(4)  # the document seed reorders the prose


def test_different_seeds_share_almost_no_names():
    a, b = World.generate(1, 300), World.generate(2, 300)
    names_a = {e.name for e in a.entities}
    names_b = {e.name for e in b.entities}
    assert len(names_a) == len(a.entities)  # names are unique within a world
    assert len(names_a & names_b) / len(names_a) < 0.05
    words_a = {w for n in names_a for w in n.split()}
    words_b = {w for n in names_b for w in n.split()}
    assert len(words_a & words_b) / len(words_a) < 0.05


def test_world_has_every_kind_and_relations_stay_inside_it(world):
    kinds = {e.name: e.kind for e in world.entities}
    assert set(kinds.values()) == set(TEMPLATES)
    targets = {"home_town": "town", "employer": "company", "sibling": "person",
               "home_port": "town", "captain": "person", "mayor": "person",
               "headquarters": "town", "founder": "person"}
    for fact in world.facts:
        assert fact.attribute in TEMPLATES[fact.kind]
        if fact.attribute in targets:
            assert kinds[fact.value] == targets[fact.attribute]
        if fact.attribute == "sibling":
            assert Fact(fact.value, "sibling", fact.entity, "person") in world.facts


def test_every_answer_appears_in_the_document_and_questions_are_unambiguous(world):
    document = world.document()
    answer_of: dict[str, str] = {}
    for qa in world.questions("all"):
        assert qa.answer in document
        assert answer_of.setdefault(qa.question, qa.answer) == qa.answer
    assert len(world.questions("all")) == sum(
        len(TEMPLATES[f.kind][f.attribute][1]) for f in world.facts)


def test_train_and_heldout_phrasings_are_disjoint_and_cover_every_attribute(world):
    def templates(phrasings):
        found: dict[tuple[str, str], set[str]] = {}
        kind = {e.name: e.kind for e in world.entities}
        for qa in world.questions(phrasings):
            template = qa.question.replace(qa.entity, "{e}")
            found.setdefault((kind[qa.entity], qa.attribute), set()).add(template)
        return found

    train, heldout = templates("train"), templates("heldout")
    every_attribute = {(k, a) for k, attrs in TEMPLATES.items() for a in attrs}
    assert set(train) == set(heldout) == every_attribute
    for key in every_attribute:
        assert len(train[key]) == TRAIN_PHRASINGS
        assert heldout[key] and not train[key] & heldout[key]
        statements, questions = TEMPLATES[key[0]][key[1]]
        assert len(statements) >= 3 and len(questions) >= 4
    assert {qa.phrasing_id for qa in world.questions("heldout")}.isdisjoint(
        {qa.phrasing_id for qa in world.questions("train")})
    with pytest.raises(ValueError):
        world.questions("test")


def test_prose_varies_phrasing_order_and_paragraphs(world):
    document, sentences = world.layout()
    used: dict[tuple[str, str], set[str]] = {}
    paragraphs_of: dict[str, set[int]] = {}
    openers = set()
    for offset, sentence, fact in sentences:
        template = sentence.replace(fact.entity, "{e}").replace(fact.value, "{v}")
        used.setdefault((fact.kind, fact.attribute), set()).add(template)
        paragraph = document.count("\n\n", 0, offset)
        paragraphs_of.setdefault(fact.entity, set()).add(paragraph)
        if offset == 0 or document[offset - 2:offset] == "\n\n":
            openers.add(fact.attribute)
    assert all(len(templates) >= 2 for templates in used.values())
    assert len(openers) > 3  # paragraphs do not all open with the same attribute
    spread = [name for name, paragraphs in paragraphs_of.items() if len(paragraphs) == 2]
    assert 0 < len(spread) < len(world.entities) / 2
    assert max(len(p) for p in paragraphs_of.values()) == 2


def test_fact_offsets_point_at_the_facts_sentence(world):
    document = world.document(5)
    offsets = world.fact_offsets(document)
    assert set(offsets) == {f.key for f in world.facts}
    assert len(set(offsets.values())) == len(offsets)
    for fact in world.facts:
        sentence = sentence_at(document, offsets[fact.key])
        assert fact.value in sentence and fact.entity in sentence
    # Still found after whitespace normalisation, as ingest does.
    flat = " ".join(document.split())
    flat_offsets = world.fact_offsets(flat)
    assert set(flat_offsets) == set(offsets)
    for fact in world.facts:
        assert fact.value in sentence_at(flat, flat_offsets[fact.key])


def test_to_native_jsonl_writes_one_valid_record(world, tmp_path):
    path = tmp_path / "world.jsonl"
    world.to_native_jsonl(path, "w7")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == {"id", "document", "questions"}
    assert record["id"] == "w7" and record["document"] == world.document()
    assert len(record["questions"]) == len(world.questions("heldout"))
    ids = set()
    for q in record["questions"]:
        assert set(q) == {"id", "question", "answers", "type", "meta"}
        assert set(q["meta"]) == {"entity", "attribute", "char_offset", "phrasing"}
        assert q["meta"]["phrasing"] == "heldout" and q["type"] == q["meta"]["attribute"]
        assert q["answers"][0] in sentence_at(record["document"], q["meta"]["char_offset"])
        ids.add(q["id"])
    assert len(ids) == len(record["questions"])


@pytest.mark.parametrize("target", [3_000, 30_000, 150_000])
def test_world_for_tokens_hits_its_target(target):
    world = world_for_tokens(seed=11, target_chars=target)
    assert abs(len(world.document()) - target) <= 0.2 * target
    assert abs(len(world.document(9)) - target) <= 0.2 * target  # other renderings too


def test_filler_adds_sentences_without_facts_and_keeps_every_fact_findable(world):
    plain = world.document()
    world.filler = 1.5
    try:
        filled, sentences = world.layout()
        assert world.layout() == (filled, sentences)  # still deterministic
        offsets = world.fact_offsets(filled)
        assert len(offsets) == len(world.facts)  # every fact's sentence is still found
        for pos, sentence, fact in sentences:
            assert filled[pos:pos + len(sentence)] == sentence
            assert offsets[fact.key] == pos
        n_sentences = filled.count(".")
        assert 2.2 * len(world.facts) < n_sentences < 2.8 * len(world.facts)
        # Every other sentence is a filler template about an entity of the world.
        fact_text = {s for _, s, _ in sentences}
        extra = [s.strip() + "." for s in filled.replace("\n\n", " ").split(".")
                 if s.strip() and s.strip() + "." not in fact_text]
        templates = set(knowledge_world.GENERIC_FILLER) | {
            t for group in knowledge_world.FILLER.values() for t in group}
        names = sorted({e.name for e in world.entities}, key=len, reverse=True)

        def template_of(sentence):
            for name in names:
                sentence = sentence.replace(name, "{e}")
            return sentence

        assert extra and all(template_of(s) in templates for s in extra)
    finally:
        world.filler = 0.0
    assert world.document() == plain  # no filler: the document as before


def test_world_for_tokens_with_filler_holds_fewer_facts_for_its_length():
    plain = world_for_tokens(seed=3, target_chars=20_000)
    filled = world_for_tokens(seed=3, target_chars=20_000, filler=2.0)
    assert abs(len(filled.document()) - 20_000) <= 0.2 * 20_000
    assert len(filled.facts) < 0.5 * len(plain.facts)
