"""A seeded synthetic knowledge world: fictional entities, their facts as prose, and questions.

The LIFT experiment (scripts/lift_experiment.py) writes a world as one long document that no
model can know, absorbs it, and asks held-out phrasings of its facts. With `filler`, sentences
that state no fact sit between the facts, so a document reads less like a table and holds
fewer facts per token. Everything here is pure Python and deterministic.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

# Question phrasings 0..TRAIN_PHRASINGS-1 of every attribute are for training and task
# generation; the rest are held out for evaluation, so a score measures recall of the fact rather
# than of a memorised question string.
TRAIN_PHRASINGS = 3
PHRASINGS = ("train", "heldout", "all")
MIN_ENTITIES = 5  # at least two people (a sibling pair) and one of every other kind
SPLIT_PROBABILITY = 0.25  # chance that an entity's facts are spread over two paragraphs
PARAGRAPH_BREAK = "\n\n"

# kind -> attribute -> (statement phrasings, question phrasings). "{e}" is the entity, "{v}" the
# value. Statements hold exactly one fact, name the entity and end at their only period, so a
# sentence can be found again in a document by its text alone.
TEMPLATES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "person": {
        "birth_year": (
            ("{e} was born in {v}.", "The birth of {e} took place in {v}.",
             "In {v}, {e} was born."),
            ("In what year was {e} born?", "When was {e} born?", "What is the birth year of {e}?",
             "Which year saw the birth of {e}?", "{e} was born in which year?"),
        ),
        "home_town": (
            ("{e} lives in {v}.", "The home of {e} is the town of {v}.",
             "{e} keeps a house in {v}."),
            ("Where does {e} live?", "What is the home town of {e}?",
             "In which town does {e} live?", "Which town is home to {e}?",
             "{e} lives in which town?"),
        ),
        "profession": (
            ("{e} works as a {v}.", "By trade, {e} is a {v}.", "{e} earns a living as a {v}."),
            ("What does {e} do for a living?", "What is the profession of {e}?",
             "What trade does {e} follow?", "What is the occupation of {e}?",
             "What kind of work does {e} do?"),
        ),
        "employer": (
            ("{e} is employed by {v}.", "{e} works for {v}.", "{v} employs {e}."),
            ("Who employs {e}?", "Which company does {e} work for?",
             "What is the employer of {e}?", "For which company does {e} work?",
             "{e} is employed by which company?"),
        ),
        "sibling": (
            ("{e} is a sibling of {v}.", "{e} and {v} are siblings.",
             "The sibling of {e} is {v}."),
            ("Who is the sibling of {e}?", "Who is a sibling of {e}?",
             "Which person is the sibling of {e}?", "Who is the brother or sister of {e}?",
             "{e} is a sibling of whom?"),
        ),
    },
    "ship": {
        "launch_year": (
            ("The {e} was launched in {v}.", "In {v}, the {e} was launched.",
             "The {e} first took to the water in {v}."),
            ("When was the {e} launched?", "In what year was the {e} launched?",
             "What is the launch year of the {e}?", "Which year saw the launch of the {e}?",
             "The {e} was launched in which year?"),
        ),
        "home_port": (
            ("The {e} sails from {v}.", "The home port of the {e} is {v}.",
             "The {e} is registered at the port of {v}."),
            ("What is the home port of the {e}?", "Where is the {e} based?",
             "From which port does the {e} sail?", "Which town is the home port of the {e}?",
             "The {e} sails from which port?"),
        ),
        "captain": (
            ("The {e} is captained by {v}.", "{v} commands the {e}.",
             "The captain of the {e} is {v}."),
            ("Who captains the {e}?", "Who is the captain of the {e}?",
             "Who is in command of the {e}?", "Which person commands the {e}?",
             "The {e} is captained by whom?"),
        ),
        "cargo": (
            ("The {e} carries {v}.", "The usual cargo of the {e} is {v}.",
             "The {e} is loaded with {v} on most voyages."),
            ("What does the {e} carry?", "What cargo does the {e} carry?",
             "What is the usual cargo of the {e}?", "What goods does the {e} transport?",
             "The {e} is loaded with what?"),
        ),
        "tonnage": (
            ("The {e} has a tonnage of {v}.", "The {e} displaces {v} tons.",
             "The {e} is a vessel of {v} tons."),
            ("What is the tonnage of the {e}?", "How many tons does the {e} displace?",
             "How heavy is the {e} in tons?", "What does the {e} weigh in tons?",
             "The {e} has a tonnage of how many tons?"),
        ),
    },
    "town": {
        "founding_year": (
            ("{e} was founded in {v}.", "The town of {e} dates from {v}.",
             "In {v}, settlers founded {e}."),
            ("When was {e} founded?", "In what year was {e} founded?",
             "What is the founding year of {e}?", "Which year saw the founding of {e}?",
             "{e} was founded in which year?"),
        ),
        "river": (
            ("{e} lies on the river {v}.", "The river {v} flows through {e}.",
             "{e} was built on the banks of the river {v}."),
            ("On which river does {e} lie?", "What river flows through {e}?",
             "Which river is {e} built on?", "What is the name of the river at {e}?",
             "{e} lies on which river?"),
        ),
        "population": (
            ("{e} has a population of {v}.", "{v} people live in {e}.",
             "The population of {e} is {v}."),
            ("What is the population of {e}?", "How many people live in {e}?",
             "How many inhabitants does {e} have?", "How large is the population of {e}?",
             "{e} has a population of how many?"),
        ),
        "mayor": (
            ("The mayor of {e} is {v}.", "{v} serves as mayor of {e}.",
             "{e} is governed by its mayor, {v}."),
            ("Who is the mayor of {e}?", "Who serves as mayor of {e}?",
             "Who governs {e} as mayor?", "Which person is mayor of {e}?",
             "{e} has which person as its mayor?"),
        ),
    },
    "company": {
        "founding_year": (
            ("{e} was founded in {v}.", "{e} opened its doors in {v}.",
             "In {v}, {e} was established."),
            ("When was {e} founded?", "In what year was {e} established?",
             "What is the founding year of {e}?", "In which year did {e} begin trading?",
             "{e} was founded in which year?"),
        ),
        "headquarters": (
            ("{e} has its headquarters in {v}.", "{e} is based in {v}.",
             "The offices of {e} stand in {v}."),
            ("Where is {e} headquartered?", "Where are the headquarters of {e}?",
             "In which town is {e} based?", "Which town houses the headquarters of {e}?",
             "{e} is based in which town?"),
        ),
        "product": (
            ("{e} makes {v}.", "{e} is known for its {v}.", "The main product of {e} is {v}."),
            ("What does {e} make?", "What is the main product of {e}?", "What does {e} produce?",
             "Which goods does {e} manufacture?", "{e} is known for making what?"),
        ),
        "founder": (
            ("{e} was founded by {v}.", "{v} founded {e}.", "The founder of {e} is {v}."),
            ("Who founded {e}?", "Who is the founder of {e}?", "Which person started {e}?",
             "Who established {e}?", "{e} was founded by whom?"),
        ),
    },
}

# Closed vocabularies. Professions start with a consonant so "a {v}" always reads right.
PROFESSIONS = ("miller", "weaver", "clerk", "surveyor", "baker", "cooper", "tanner", "potter",
               "mason", "smith", "carpenter", "brewer", "chandler", "glazier", "saddler", "tailor",
               "printer", "doctor", "lawyer", "teacher", "farmer", "fisher", "painter", "builder",
               "locksmith", "bookbinder")
CARGOES = ("salt", "timber", "wool", "copper", "tea", "coal", "grain", "iron", "cotton", "wine",
           "tobacco", "sugar", "spices", "marble", "hides", "tin", "linen", "fish")
PRODUCTS = ("rope", "glass", "lamps", "clocks", "paper", "soap", "candles", "nails", "barrels",
            "bricks", "cloth", "boots", "ink", "needles", "bells", "lenses", "buttons", "anchors",
            "compasses", "maps")

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s",
           "st", "t", "th", "tr", "v", "w", "z", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "y")
_CODAS = ("", "", "n", "r", "l", "s", "th", "nd", "rk", "m")
_TOWN_SUFFIXES = ("ford", "wick", "ham", "by", "mouth", "stead", "dale", "holm", "port", "bury")
_COMPANY_SUFFIXES = ("Works", "Mills", "Trading", "Foundry", "Brothers", "Company")


@dataclass(frozen=True)
class Entity:
    name: str
    kind: str


@dataclass(frozen=True)
class Fact:
    entity: str
    attribute: str
    value: str
    kind: str

    @property
    def key(self) -> tuple[str, str]:
        """The fact's identity in offsets and evaluation: (entity, attribute)."""
        return (self.entity, self.attribute)


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    entity: str
    attribute: str
    phrasing_id: int


class _Names:
    """Draws syllable-built words, never the same stem twice in one world."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            stem = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS)
                           for _ in range(syllables)) + self.rng.choice(_CODAS)
            if stem not in self.used:
                self.used.add(stem)
                return stem.capitalize()

    def person(self) -> str:
        return f"{self.word(2)} {self.word(self.rng.choice((2, 3)))}"

    def ship(self) -> str:
        return self.word(self.rng.choice((2, 3)))

    def town(self) -> str:
        return self.word(self.rng.choice((1, 2))) + self.rng.choice(_TOWN_SUFFIXES)

    def company(self) -> str:
        return f"{self.word(2)} {self.rng.choice(_COMPANY_SUFFIXES)}"


# Sentences that state no fact (nothing a question asks about), one full stop each; "{e}" is
# the entity of the paragraph they stand in.
FILLER: dict[str, tuple[str, ...]] = {
    "person": ("Friends describe {e} as quiet and careful.",
               "{e} is often seen walking by the water in the evening.",
               "Little is written about the early years of {e}.",
               "Neighbours say that {e} rarely travels far from home.",
               "{e} keeps a small garden behind the house.",
               "Letters written by {e} survive in a private collection."),
    "ship": ("The {e} is painted dark green with a white stripe.",
             "Sailors speak well of the {e} in rough weather.",
             "The {e} has been repaired many times over the years.",
             "Crowds gather at the quay whenever the {e} comes in."),
    "town": ("The streets of {e} are narrow and steep.",
             "Visitors to {e} often mention the smell of the sea.",
             "The market in {e} is busy on most mornings.",
             "Old stone walls still stand around parts of {e}."),
    "company": ("{e} is known for careful work and fair prices.",
                "The workshops of {e} are noisy from dawn to dusk.",
                "Many families in the region depend on {e}.",
                "{e} has a name for paying its workers on time."),
}
GENERIC_FILLER = ("The weather that year was unusually wet.",
                  "Records from the period are patchy in places.",
                  "Such arrangements were common in the region at the time.",
                  "Much of this was still remembered decades later.")


@dataclass
class World:
    seed: int
    entities: list[Entity]
    facts: list[Fact]
    filler: float = 0.0  # sentences without a fact per fact sentence, on average

    @classmethod
    def generate(cls, seed: int, n_entities: int) -> World:
        """Build a world of `n_entities` fictional entities (about 2/5 people) and their facts."""
        if n_entities < MIN_ENTITIES:
            raise ValueError(f"a world needs at least {MIN_ENTITIES} entities, got {n_entities}")
        rng = random.Random(f"world:{seed}")
        names = _Names(rng)
        n_each = max(1, n_entities // 5)
        people = [names.person() for _ in range(n_entities - 3 * n_each)]
        towns = [names.town() for _ in range(n_each)]
        ships = [names.ship() for _ in range(n_each)]
        companies = [names.company() for _ in range(n_each)]
        # Few rivers, so several towns share one, as they would.
        rivers = [names.word(2) for _ in range(len(towns) // 3 + 2)]

        # Siblings come in pairs so the relation is symmetric; an odd one out has none.
        order = rng.sample(people, len(people))
        sibling = dict(zip(order[::2], order[1::2]))
        sibling.update({b: a for a, b in sibling.items()})
        birth = {p: rng.randint(1780, 1870) for p in people}

        entities: list[Entity] = []
        facts: list[Fact] = []

        def add(kind: str, name: str, **values: object) -> None:
            entities.append(Entity(name, kind))
            facts.extend(Fact(name, a, str(v), kind) for a, v in values.items() if v is not None)

        for p in people:
            add("person", p, birth_year=birth[p], home_town=rng.choice(towns),
                profession=rng.choice(PROFESSIONS), employer=rng.choice(companies),
                sibling=sibling.get(p))
        for s in ships:
            add("ship", s, launch_year=rng.randint(1790, 1900), home_port=rng.choice(towns),
                captain=rng.choice(people), cargo=rng.choice(CARGOES),
                tonnage=rng.randint(12, 180) * 10)
        for t in towns:
            add("town", t, founding_year=rng.randint(1150, 1790), river=rng.choice(rivers),
                population=rng.randint(30, 6000) * 10, mayor=rng.choice(people))
        for c in companies:
            founder = rng.choice(people)
            # A company is founded by an adult: keeps the world free of contradictions.
            add("company", c, founding_year=birth[founder] + rng.randint(20, 55),
                headquarters=rng.choice(towns), product=rng.choice(PRODUCTS), founder=founder)
        return cls(seed, entities, facts)

    def layout(self, seed: int = 0) -> tuple[str, list[tuple[int, str, Fact]]]:
        """Render the document and list its sentences as (char offset, sentence, fact)."""
        rng = random.Random(f"document:{self.seed}:{seed}")
        fill = random.Random(f"filler:{self.seed}:{seed}")  # its own: filler 0 changes nothing
        by_entity: dict[str, list[Fact]] = {}
        for fact in self.facts:
            by_entity.setdefault(fact.entity, []).append(fact)
        paragraphs: list[list[Fact]] = []
        for facts in by_entity.values():
            facts = rng.sample(facts, len(facts))
            if len(facts) >= 4 and rng.random() < SPLIT_PROBABILITY:
                cut = rng.randint(2, len(facts) - 2)
                paragraphs += [facts[:cut], facts[cut:]]
            else:
                paragraphs.append(facts)
        rng.shuffle(paragraphs)

        parts: list[str] = []
        sentences: list[tuple[int, str, Fact]] = []
        pos = 0
        for i, paragraph in enumerate(paragraphs):
            for j, fact in enumerate(paragraph):
                sep = (PARAGRAPH_BREAK if i else "") if j == 0 else " "
                statement = rng.choice(TEMPLATES[fact.kind][fact.attribute][0])
                sentence = statement.format(e=fact.entity, v=fact.value)
                parts += [sep, sentence]
                pos += len(sep)
                sentences.append((pos, sentence, fact))
                pos += len(sentence)
                for extra in self._filler(fill, fact):
                    parts += [" ", extra]
                    pos += 1 + len(extra)
        return "".join(parts), sentences

    def _filler(self, rng: random.Random, fact: Fact) -> list[str]:
        """The sentences without a fact that follow `fact`'s (none when `filler` is 0)."""
        n = int(self.filler) + (rng.random() < self.filler % 1)
        pool = FILLER[fact.kind] + GENERIC_FILLER
        return [rng.choice(pool).format(e=fact.entity) for _ in range(n)]

    def document(self, seed: int = 0) -> str:
        """The world's facts as prose: paragraphs in random order, one fact per sentence."""
        return self.layout(seed)[0]

    def questions(self, phrasings: str = "train") -> list[QA]:
        """One question per fact and selected phrasing ("train", "heldout" or "all")."""
        if phrasings not in PHRASINGS:
            raise ValueError(f"phrasings must be one of {PHRASINGS}, got {phrasings!r}")
        qas = []
        for fact in self.facts:
            templates = TEMPLATES[fact.kind][fact.attribute][1]
            ids = {"train": range(TRAIN_PHRASINGS),
                   "heldout": range(TRAIN_PHRASINGS, len(templates)),
                   "all": range(len(templates))}[phrasings]
            qas += [QA(templates[i].format(e=fact.entity), fact.value, fact.entity,
                       fact.attribute, i) for i in ids]
        return qas

    def fact_offsets(self, document: str) -> dict[tuple[str, str], int]:
        """Char offset of each fact's sentence in `document`, keyed by `Fact.key`.

        Found by sentence text, so it also works after whitespace is normalised; facts whose
        sentence is absent are left out.
        """
        wanted: dict[str, tuple[str, str]] = {}
        for fact in self.facts:
            for statement in TEMPLATES[fact.kind][fact.attribute][0]:
                wanted.setdefault(statement.format(e=fact.entity, v=fact.value), fact.key)
        offsets: dict[tuple[str, str], int] = {}
        for match in re.finditer(r"[^\s.][^.]*\.", document):
            key = wanted.get(" ".join(match.group().split()))
            if key is not None and key not in offsets:
                offsets[key] = match.start()
        return offsets

    def to_native_jsonl(self, path: str | Path, doc_id: str, phrasings: str = "heldout",
                        doc_seed: int = 0) -> None:
        """Write the document and its questions as one line of lift-mlx's native eval format."""
        document = self.document(doc_seed)
        offsets = self.fact_offsets(document)
        questions = [
            {"id": f"{doc_id}-q{i}", "question": qa.question, "answers": [qa.answer],
             "type": qa.attribute,
             "meta": {"entity": qa.entity, "attribute": qa.attribute,
                      "char_offset": offsets[(qa.entity, qa.attribute)], "phrasing": phrasings}}
            for i, qa in enumerate(self.questions(phrasings))
        ]
        record = {"id": doc_id, "document": document, "questions": questions}
        Path(path).write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")


def world_for_tokens(seed: int, target_chars: int, filler: float = 0.0) -> World:
    """A world whose default document (`document(0)`) has roughly `target_chars` characters."""
    per_entity = 170 * (1 + filler)  # characters, roughly; refined below
    n = max(MIN_ENTITIES, round(target_chars / per_entity))
    world = World.generate(seed, n)
    world.filler = filler
    for _ in range(6):
        length = len(world.document())
        if abs(length - target_chars) <= 0.05 * target_chars:
            break
        n_next = max(MIN_ENTITIES, round(n * target_chars / length))
        if n_next == n:
            break
        n = n_next
        world = World.generate(seed, n)
        world.filler = filler
    return world
