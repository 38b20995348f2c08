"""Text for the lip model: generated training sentences, and held-out prose it never sees.

The training sentences come from a small grammar and a word list drawn with a seeded
generator, so the corpus is a pure function of (count, seed) and `personas train lips`
reproduces it anywhere. The held-out prose is the scenes' narration: real sentences of
another style, whose words are mostly not in the list.
"""

from __future__ import annotations

import random
import re

SUBJECTS = ("the old captain", "my sister", "a quiet engineer", "the small boy", "our neighbour", "the teacher",
            "every visitor", "the pilot", "a tired farmer", "the young doctor", "his brother", "the choir",
            "she", "he", "we", "they", "the baker", "a stranger from the north", "the judge", "the fisherman")
VERBS = ("carried", "painted", "measured", "borrowed", "watched", "fixed", "followed", "opened", "pushed",
         "bought", "loved", "described", "remembered", "threw", "washed", "moved", "checked", "played",
         "heard", "found", "mailed", "judged", "thanked", "built", "shook", "chose", "lifted", "caught")
OBJECTS = ("a heavy box", "the blue umbrella", "seven oranges", "the broken bicycle", "a map of the harbour",
           "her grandmother's watch", "the yellow kite", "a jar of honey", "the pages of the journal",
           "twelve wooden chairs", "a thick woolen sweater", "the violin", "a bowl of soup", "the photographs",
           "the cheap shoes", "a huge pumpkin", "the frozen lake", "three thousand voices", "the jewels",
           "the rough cloth", "a smooth pebble", "the zebra's stripes", "the thirsty goat", "a loaf of bread")
PLACES = ("near the window", "after the storm", "at the edge of the village", "before breakfast",
          "in the museum", "under the bridge", "by the river", "on Thursday morning", "during the show",
          "behind the station", "across the valley", "with great care", "without a word", "all through June")
OPENERS = ("Well,", "Honestly,", "Yesterday", "Oh,", "Look,", "Quickly,", "Perhaps", "Meanwhile,", "Sadly,",
           "Of course,", "By the way,", "Believe me,", "Years ago,")
QUESTIONS = ("Why did {s} leave {o} {p}?", "Who {v} {o}?", "Could {s} bring {o} {p}?", "Where is {o} now?",
             "How often do you think about {o}?", "Is it true that {s} {v} {o}?")
EXCLAIM = ("What a surprise!", "Absolutely not!", "Wow, look at {o}!", "That was amazing!", "Oh no, {s} {v} {o}!")
NUMBERS = ("one", "two", "four", "eight", "fifteen", "forty", "ninety nine", "a hundred and six", "a million")


def training_sentences(count: int, seed: int) -> list[str]:
    """``count`` varied sentences (statements, questions, exclamations, lists and numbers)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        s, v, o, p = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(PLACES)
        kind = i % 6
        if kind == 0:
            text = f"{rng.choice(OPENERS)} {s} {v} {o} {p}."
        elif kind == 1:
            text = rng.choice(QUESTIONS).format(s=s, v=v, o=o, p=p)
        elif kind == 2:
            text = rng.choice(EXCLAIM).format(s=s, v=v, o=o) + f" {s.capitalize()} {v} {o}."
        elif kind == 3:
            text = f"{s.capitalize()} {v} {rng.choice(NUMBERS)} things, {o}, and {rng.choice(OBJECTS)}."
        elif kind == 4:
            text = f"{s.capitalize()} {v} {o}, then {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {p}."
        else:
            text = f"{p.capitalize()}, {s} {v} {o}; nobody expected {rng.choice(OBJECTS)}."
        out.append(text[0].upper() + text[1:])
    return out


def held_out_sentences(limit: int) -> list[str]:
    """Sentences of the scenes' narration (never used for training)."""
    from scenes import texts

    prose = " ".join(v for k, v in vars(texts).items() if k.isupper() and isinstance(v, str))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", prose) if len(s.split()) >= 4]
    return sentences[:limit]
