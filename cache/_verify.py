"""The check a semantic near match must pass before its answer is served: two prompts are the
same request only if nothing that changes an answer differs between them.

An embedding says two texts are about the same thing; it cannot tell "capital of Austria"
from "capital of Australia", "5 km to miles" from "5 miles to km" or "is 97 prime" from "is 91
prime" (docs/caching.md has the measurements). So the verifier compares the texts themselves,
reduced to what carries meaning: lower case, contractions spelled out, forms of "be" in one
tense each, possessives turned round ("France's capital" -> "capital of France"), greetings
and politeness dropped at either end, articles dropped. What is left must be the same words in
the same order: every number, name, unit, negation, direction word, operator and target
language is a word of that sequence, so none of them can differ.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Words, numbers (thousands separators dropped) and the symbols that change an answer.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['\u2019][^\W\d_]+)*|[+\-*/=<>^%$€£#@&|!?]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")

# Articles: dropped wherever they are.
_DROPPED = frozenset({"a", "an", "the"})
# Greetings and politeness: dropped at the start or the end of a text only ("say thank you
# in French" needs its "thank you").
_POLITE = frozenset({"please", "pls", "kindly", "hey", "hi", "hello", "thanks", "thx"})
_THANK_YOU = ["thank", "you"]
# Openings that ask for the same thing as a bare question or instruction.
_OPENINGS = tuple(
    tuple(phrase.split())
    for phrase in (
        "can you please tell me",
        "could you please tell me",
        "would you please tell me",
        "can you tell me",
        "could you tell me",
        "would you tell me",
        "please tell me",
        "tell me",
        "i would like to know",
        "i'd like to know",
        "i want to know",
        "do you know",
        "can you please",
        "could you please",
        "would you please",
        "can you",
        "could you",
        "would you",
    )
)
_CONTRACTIONS = {
    "n't": ["not"],
    "'re": ["are"],
    "'m": ["am"],
    "'ll": ["will"],
    "'ve": ["have"],
    "'d": ["would"],
}
_IRREGULAR = {
    "can't": ["can", "not"],
    "cannot": ["can", "not"],
    "won't": ["will", "not"],
    "shan't": ["shall", "not"],
    "ain't": ["is", "not"],
    "what's": ["what", "is"],
    "that's": ["that", "is"],
    "it's": ["it", "is"],
    "there's": ["there", "is"],
    "here's": ["here", "is"],
    "who's": ["who", "is"],
    "where's": ["where", "is"],
    "how's": ["how", "is"],
    "let's": ["let", "us"],
    "why's": ["why", "is"],
    "when's": ["when", "is"],
    "he's": ["he", "is"],
    "she's": ["she", "is"],
}
# One word per tense of "be": "what's" and "what are" ask the same.
_BE = {"is": "be", "are": "be", "am": "be", "was": "was", "were": "was"}
_POSSESSIVE = "'s"
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBERS = {word: str(value) for value, word in enumerate(_NUMBER_WORDS.split(" "))}


@dataclass(frozen=True, slots=True)
class Verdict:
    same: bool
    reason: str  # why not, for logs and the measurements


def _split(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").lower()
    words: list[str] = []
    for token in _TOKEN.findall(_THOUSANDS.sub("", text)):
        if token in _IRREGULAR:
            words.extend(_IRREGULAR[token])
            continue
        for suffix, spelled in _CONTRACTIONS.items():
            if token.endswith(suffix) and len(token) > len(suffix):
                words.extend([token[: -len(suffix)], *spelled])
                break
        else:
            if token.endswith(_POSSESSIVE) and len(token) > 2:
                words.extend([token[:-2], _POSSESSIVE])
            else:
                words.append(token)
    return words


def _without_politeness(words: list[str]) -> list[str]:
    start, end = 0, len(words)
    while start < end and words[start] in _POLITE:
        start += 1
    while start < end:
        if words[end - 1] in _POLITE:
            end -= 1
        elif end - start >= 2 and words[end - 2 : end] == _THANK_YOU:
            end -= 2
        else:
            break
    return words[start:end]


def _without_opening(words: list[str]) -> list[str]:
    for opening in _OPENINGS:
        if tuple(words[: len(opening)]) == opening:
            return words[len(opening) :]
    return words


def _turn_possessives(words: list[str]) -> list[str]:
    """ "france 's capital" -> "capital of france" (one word each side: the common case)."""
    out: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if index + 2 < len(words) and words[index + 1] == _POSSESSIVE:
            out.extend([words[index + 2], "of", word])
            index += 3
            continue
        out.append(word)
        index += 1
    return out


def canonical(text: str) -> tuple[str, ...]:
    """The words of `text` that an answer depends on, in order."""
    split = _split(text)
    words = [
        _NUMBERS.get(w, w)
        for i, w in enumerate(split)
        if w not in _DROPPED and w != "?" and (w != "!" or (i and split[i - 1].isdigit()))
    ]  # "!" after a number is a factorial; elsewhere an exclamation
    words = _without_opening(_without_politeness(words))
    words = [_BE.get(w, w) for w in _turn_possessives(words)]
    if words[:2] == ["what", "be"]:  # "what is X?" asks what "tell me X" does
        words = words[2:]
    return tuple(words)


def same_request(a: str, b: str) -> Verdict:
    """Whether an answer to `a` answers `b` (the texts of the two last user turns; everything
    else about the two requests is already equal: the cache partitions by it)."""
    left, right = canonical(a), canonical(b)
    if not left or not right:  # "Hi!" and "Thanks!" reduce to nothing: not the same
        return Verdict(a.strip() == b.strip(), "nothing left to compare")
    if left == right:
        return Verdict(True, "same words")
    if sorted(left) == sorted(right):
        return Verdict(False, "same words in another order")
    only = sorted(set(left) ^ set(right))
    return Verdict(False, "differs in: " + " ".join(only[:6]))
