"""Write the shipped extraction dataset: a sentence about a person -> its fields as JSON.

Deterministic (seeded): the same files on every machine. The held-out split uses names,
cities and sentence shapes that the training split never shows, so a score on it measures
the skill, not recall. Usage: python scripts/make_extraction_data.py [--out data/extraction]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

INSTRUCTION = (
    "Extract the person's name, age, city and job from the sentence. Answer with JSON only, "
    'as {"name": ..., "age": ..., "city": ..., "job": ...}.\n\nSentence: '
)
FIRST = [
    "Maria",
    "Jonas",
    "Aiko",
    "Pedro",
    "Fatima",
    "Liam",
    "Chen",
    "Olga",
    "Kwame",
    "Sofia",
    "Ravi",
    "Elena",
    "Tomas",
    "Amara",
    "Lukas",
    "Nadia",
    "Omar",
    "Ingrid",
    "Diego",
    "Mei",
    "Hugo",
    "Priya",
    "Anton",
    "Zara",
    "Felix",
    "Leila",
    "Marco",
    "Yuki",
    "Sven",
    "Carmen",
]
LAST = [
    "Lopez",
    "Weber",
    "Tanaka",
    "Silva",
    "Haddad",
    "Murphy",
    "Wang",
    "Ivanova",
    "Mensah",
    "Rossi",
    "Sharma",
    "Petrova",
    "Novak",
    "Okafor",
    "Becker",
    "Karimi",
    "Farouk",
    "Berg",
    "Castro",
    "Lin",
    "Dubois",
    "Patel",
    "Orlov",
    "Ahmed",
    "Kraus",
    "Nasser",
    "Bianchi",
    "Sato",
    "Lund",
    "Ruiz",
]
CITIES = [
    "Lisbon",
    "Berlin",
    "Osaka",
    "Recife",
    "Beirut",
    "Dublin",
    "Shanghai",
    "Kazan",
    "Accra",
    "Turin",
    "Pune",
    "Sofia",
    "Brno",
    "Lagos",
    "Munich",
    "Tabriz",
    "Cairo",
    "Bergen",
    "Bogota",
    "Taipei",
    "Lyon",
    "Surat",
    "Minsk",
    "Karachi",
    "Graz",
    "Amman",
    "Naples",
    "Sendai",
    "Malmo",
    "Seville",
]
JOBS = [
    "nurse",
    "carpenter",
    "architect",
    "teacher",
    "pilot",
    "chef",
    "lawyer",
    "baker",
    "electrician",
    "dentist",
    "journalist",
    "plumber",
    "librarian",
    "farmer",
    "engineer",
    "pharmacist",
    "photographer",
    "mechanic",
    "translator",
    "surgeon",
]
TRAIN_SHAPES = [
    "{name}, {age}, lives in {city} and works as a {job}.",
    "Meet {name}: a {age}-year-old {job} from {city}.",
    "{name} is a {job} in {city} and turned {age} this year.",
    "At {age}, {name} works as a {job} and calls {city} home.",
    "The {job} {name} ({age}) moved to {city} last spring.",
    "Our new neighbour in {city} is {name}, a {job} aged {age}.",
]
HELD_OUT_SHAPES = [
    "{name} ({age}) has been a {job} in {city} for years.",
    "In {city}, the {age}-year-old {name} earns a living as a {job}.",
    "Ask anyone in {city}: {name}, {age}, is the best {job} around.",
]


def _made_up(rng: random.Random) -> str:
    """A pronounceable word no list holds (`Talomi`): half the training names and cities are
    such words, so the adapter learns to copy whatever the sentence says, not to recall."""
    syllables = [
        rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 3))
    ]
    return "".join(syllables).capitalize()


def _examples(rng: random.Random, shapes: list[str], names: list[str], cities: list[str],
              count: int, made_up: bool) -> list[dict[str, object]]:  # fmt: skip
    rows = []
    for _ in range(count):
        invent = made_up and rng.random() < 0.5
        first = _made_up(rng) if invent else rng.choice(names)
        last = _made_up(rng) if invent and rng.random() < 0.5 else rng.choice(LAST)
        city = _made_up(rng) if made_up and rng.random() < 0.5 else rng.choice(cities)
        fields = {
            "name": f"{first} {last}",
            "age": rng.randint(19, 78),
            "city": city,
            "job": rng.choice(JOBS),
        }
        sentence = rng.choice(shapes).format(**fields)
        rows.append(
            {
                "messages": [{"role": "user", "content": INSTRUCTION + sentence}],
                "expected": fields,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data/extraction")
    args = parser.parse_args()
    rng = random.Random(20261126)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": _examples(rng, TRAIN_SHAPES, FIRST[:22], CITIES[:22], 320, made_up=True),
        "heldout": _examples(rng, HELD_OUT_SHAPES, FIRST[22:], CITIES[22:], 40, made_up=False),
    }
    for split, rows in splits.items():
        with (out / f"{split}.jsonl").open("w") as file:
            for row in rows:
                file.write(json.dumps(row) + "\n")
        print(f"{out / split}.jsonl: {len(rows)} examples")


if __name__ == "__main__":
    main()
