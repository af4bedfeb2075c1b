"""Generate ``yoda.jsonl``: a tiny, deterministic "talk like Yoda" data set.

In the spirit of the classic tutorial example that turned
"The Force is strong in you!" into "Strong in you, the Force is.", every row
is a short copular sentence and its Yoda-style inversion.

Rule
----
Input (column ``sentence``)::

    <Subject> <verb> <complement>.

Output (column ``yoda``)::

    <Complement>, <subject> <verb>.

where

* ``<verb>`` is one of ``is`` / ``was`` / ``will be`` for a singular subject
  and ``are`` / ``were`` / ``will be`` for a plural one (``you`` is plural);
* the complement moves to the front and only its first letter is upper-cased;
* the subject keeps its mid-sentence form: ordinary words and pronouns are
  lower-cased ("The ship" -> "the ship", "He" -> "he"), proper nouns keep
  their capitals ("Luke", "the Force", "Master Yoda");
* a comma separates complement and subject, and both sides end with ".".

Examples::

    The Force is strong in you.   ->  Strong in you, the Force is.
    He was afraid of Vader.       ->  Afraid of Vader, he was.
    The rebels will be on Endor.  ->  On Endor, the rebels will be.

Layout of the file
------------------
``N_ROWS`` rows, each with a distinct (subject, complement) pair, drawn with a
fixed-seed ``random.Random`` (identical output on every run and platform).
The first ``N_ROWS - N_HELDOUT`` rows are the training block, the last
``N_HELDOUT`` rows (15 %) the held-out block; each block is sorted by
``sentence``.  Every subject and every complement occurs in the training
block, but no held-out (subject, complement) pair does, so any validation
split that takes at most the last 15 % of the file measures generalisation to
unseen combinations.  Sentences are short: a whole example rendered through
the SmolLM2 chat template (default system prompt included) stays well under
64 tokens.

Usage::

    python specs/data/make_yoda.py      # writes specs/data/yoda.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 1977
N_ROWS = 360
N_HELDOUT = 54  # the last 15 % of the file

# Subjects in their mid-sentence spelling, with grammatical number.
SINGULAR = [
    "the Force",
    "Luke",
    "Master Yoda",
    "Princess Leia",
    "the ship",
    "my father",
    "this droid",
    "the old Jedi",
    "the dark side",
    "your lightsaber",
    "he",
    "she",
    "it",
]
PLURAL = [
    "you",
    "we",
    "they",
    "the rebels",
    "your friends",
    "the Ewoks",
    "these droids",
    "the stormtroopers",
    "our pilots",
    "the stars",
]

# Complements in their mid-sentence spelling (proper nouns capitalised).
COMPLEMENTS = [
    "strong in you",
    "strong with the Force",
    "very old",
    "ready for battle",
    "far from home",
    "on Dagobah",
    "on Endor",
    "afraid of Vader",
    "hungry",
    "lost in the swamp",
    "full of fear",
    "wise beyond words",
    "near the Death Star",
    "in great danger",
    "happy today",
    "quiet tonight",
    "late again",
    "brave",
    "too small",
    "at the temple",
    "angry",
    "close to victory",
    "from Tatooine",
    "deep in thought",
    "patient",
    "weak",
    "cold",
    "busy training",
    "very fast",
    "not ready",
]

TENSES = {
    # tense: (singular verb, plural verb)
    "present": ("is", "are"),
    "past": ("was", "were"),
    "future": ("will be", "will be"),
}


def _cap(text: str) -> str:
    """Upper-case only the first character (keeps proper nouns intact)."""
    return text[:1].upper() + text[1:]


def make_pair(subject: str, plural: bool, tense: str, complement: str) -> dict:
    verb = TENSES[tense][1 if plural else 0]
    return {
        "sentence": f"{_cap(subject)} {verb} {complement}.",
        "yoda": f"{_cap(complement)}, {subject} {verb}.",
    }


def build_rows() -> list[dict]:
    rng = random.Random(SEED)
    subjects = [(s, False) for s in SINGULAR] + [(s, True) for s in PLURAL]
    pairs = [(s, c) for s in subjects for c in COMPLEMENTS]
    chosen = rng.sample(pairs, N_ROWS)
    tenses = sorted(TENSES)
    rows = [
        (make_pair(subj, plural, rng.choice(tenses), comp), subj, comp)
        for (subj, plural), comp in chosen
    ]
    train, heldout = rows[: N_ROWS - N_HELDOUT], rows[N_ROWS - N_HELDOUT :]

    # Every word-list entry must be seen in training; held-out pairs never are
    # (guaranteed by sampling distinct pairs).
    seen_subjects = {subj for _, subj, _ in train}
    seen_complements = {comp for _, _, comp in train}
    assert seen_subjects == {s for s, _ in subjects}, "subject missing from train"
    assert seen_complements == set(COMPLEMENTS), "complement missing from train"

    key = lambda r: r["sentence"]  # noqa: E731
    return sorted((r for r, _, _ in train), key=key) + sorted(
        (r for r, _, _ in heldout), key=key
    )


def main() -> None:
    out = Path(__file__).with_name("yoda.jsonl")
    rows = build_rows()
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {out} (last {N_HELDOUT} held out)")


if __name__ == "__main__":
    main()
