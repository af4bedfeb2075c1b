"""Write the five quality-benchmark tasks: deterministic, seeded, small (CPU-sized) data sets.

Each task has a training file (``data/<task>.jsonl``) and a disjoint held-out file
(``data/<task>.heldout.jsonl``) that the specs name as ``data.validation``, so every run is scored
on the same unseen examples. Usage: ``python benchmarks/quality/make_tasks.py``.

  dates      string transformation: "March 14, 1995" -> "1995-03-14"            (completion)
  extract    extraction: an order sentence -> "name; city; quantity"           (completion)
  topic      classification-like: a sentence -> one of five topic labels       (completion)
  polite     a chat style: "Certainly, <name>! <fact>. Anything else?"      (chat, one turn)
  codeword   multi-turn: remember a code word given two turns earlier          (chat, two turns)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent / "data"
TRAIN, HELDOUT = 150, 24
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
FIRST = ["Alice", "Bruno", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivan", "Julia", "Kofi", "Lena",
         "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara"]
LAST = ["Smith", "Okafor", "Larsen", "Moreau", "Tanaka", "Novak", "Silva", "Weber", "Haddad", "Kowalski"]
CITIES = ["Denver", "Lyon", "Osaka", "Porto", "Oslo", "Austin", "Krakow", "Dublin", "Quito", "Perth", "Malmo",
          "Tulsa"]
ITEMS = ["lamps", "chairs", "mugs", "books", "kettles", "rugs", "clocks", "plates"]
TOPICS = {
    "sports": ["the striker scored twice", "the marathon started at dawn", "our team lost the final",
               "she won the tennis match", "the coach changed the lineup", "he broke the swimming record"],
    "cooking": ["the soup needs more salt", "she baked bread this morning", "fry the onions slowly",
                "the pasta was overcooked", "he roasted a chicken", "add garlic to the sauce"],
    "weather": ["heavy rain is expected tonight", "the wind picked up at noon", "it snowed all weekend",
                "a heatwave hit the city", "fog covered the valley", "the storm knocked out power"],
    "music": ["the band played a new song", "she tuned her violin", "the concert sold out",
              "he practices piano daily", "the drummer kept the beat", "the choir sang in harmony"],
    "travel": ["our flight was delayed", "they booked a hostel in Rome", "pack light for the trip",
               "the train crossed the Alps", "she lost her passport", "we rented a car at the airport"],
}
OPENERS = ["Yesterday", "Apparently", "Last week", "This morning", "Honestly", "As usual", "Once again",
           "Surprisingly", "Today", "Finally"]
FACTS = {"water boils at": "100 degrees Celsius", "the largest planet is": "Jupiter",
         "a week has": "seven days", "the capital of France is": "Paris", "a triangle has": "three sides",
         "the opposite of hot is": "cold", "the color of grass is": "green", "a spider has": "eight legs",
         "the first month is": "January", "ice is made of": "water", "a dozen is": "twelve",
         "the sun rises in the": "east", "a year has": "twelve months", "bees make": "honey",
         "the capital of Japan is": "Tokyo", "a square has": "four sides"}
ASK = ["Tell me: {q}?", "Quick question, {q}?", "Do you know what {q}?", "Please remind me: {q}?"]
WORDS = ["falcon", "copper", "meadow", "lantern", "orbit", "velvet", "cobalt", "harbor", "ember", "willow",
         "quartz", "saffron", "tundra", "marble", "cedar", "nimbus", "pepper", "glacier", "tango", "zephyr",
         "basil", "canyon", "delta", "fjord", "garnet", "hazel", "indigo", "juniper", "kernel", "lotus"]


def dates(rng: random.Random) -> dict[str, str]:
    y, m, d = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
    return {"prompt": f"Convert to ISO format: {MONTHS[m - 1]} {d}, {y}", "completion": f"{y}-{m:02d}-{d:02d}"}


def extract(rng: random.Random) -> dict[str, str]:
    name, city, n, item = (f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.choice(CITIES), rng.randint(2, 19),
                           rng.choice(ITEMS))
    text = rng.choice(["{name} ordered {n} {item}, to be shipped to {city}.",
                       "Ship {n} {item} to {city} for {name}.",
                       "Order from {name}: {n} {item}, delivery city {city}."]).format(name=name, n=n, item=item,
                                                                                        city=city)
    return {"prompt": f"Extract name; city; quantity: {text}", "completion": f"{name}; {city}; {n}"}


def topic(rng: random.Random) -> dict[str, str]:
    label = rng.choice(sorted(TOPICS))
    return {"prompt": f"Topic of: {rng.choice(OPENERS)}, {rng.choice(TOPICS[label])}.", "completion": label}


def polite(rng: random.Random) -> dict[str, object]:
    q, name = rng.choice(sorted(FACTS)), rng.choice(FIRST)
    return {"messages": [{"role": "user", "content": f"I'm {name}. " + rng.choice(ASK).format(q=q)},
                         {"role": "assistant", "content": f"Certainly, {name}! {q[0].upper()}{q[1:]} {FACTS[q]}. "
                                                          "Anything else?"}]}


def codeword(rng: random.Random) -> dict[str, object]:
    word, other = rng.sample(WORDS, 2)
    return {"messages": [{"role": "user", "content": f"The code word is {word}. The decoy is {other}."},
                         {"role": "assistant", "content": "Understood."},
                         {"role": "user", "content": rng.choice(["What is the code word?", "Code word, please.",
                                                                 "Repeat the code word."])},
                         {"role": "assistant", "content": word}]}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for seed, make in enumerate((dates, extract, topic, polite, codeword)):
        rng, seen, rows = random.Random(1000 + seed), set(), []
        while len(rows) < TRAIN + HELDOUT:
            row = make(rng)
            key = json.dumps(row, sort_keys=True)
            if key not in seen:
                seen.add(key)
                rows.append(row)
        for name, part in ((f"{make.__name__}.jsonl", rows[:TRAIN]), (f"{make.__name__}.heldout.jsonl",
                                                                       rows[TRAIN:])):
            (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in part))


if __name__ == "__main__":
    main()
