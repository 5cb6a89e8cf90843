"""The verifier of semantic near matches on pairs that show each of its rules (the labelled
sets in data/cache/ are replayed through the cache in test_response_cache.py)."""

from __future__ import annotations

import pytest

from cache import canonical, same_request


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the capital of France?", "what's France's capital"),
        ("Tell me the boiling point of water.", "What is the boiling point of water?"),
        ("Could you please give me three tips?", "Give me 3 tips, thanks!"),
        ("What is 1,000 plus 250?", "what is 1000 plus 250"),
        ("Hi! Who wrote Hamlet?", "who wrote hamlet"),
        ("Why's the sky blue?", "Why is the sky blue?"),
    ],
)
def test_the_same_question_in_other_words_is_the_same_request(a: str, b: str) -> None:
    assert same_request(a, b).same, (canonical(a), canonical(b))


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("Convert 5 km to miles", "Convert 5 miles to km", "another order"),
        ("Is 97 prime?", "Is 91 prime?", "91 97"),
        ("Why do cats purr?", "Why don't cats purr?", "not"),
        ("Who is the president?", "Who was the president?", "be was"),
        ("What is 5!", "What is 5", "!"),  # a factorial, not an exclamation
        ("How do I say thank you in French?", "How do I say you in French?", "thank"),
        ("Hi!", "Thanks!", "nothing left"),  # no words left: only the same text is the same
    ],
)
def test_a_look_alike_is_not_the_same_request(a: str, b: str, reason: str) -> None:
    verdict = same_request(a, b)
    assert not verdict.same and reason in verdict.reason
