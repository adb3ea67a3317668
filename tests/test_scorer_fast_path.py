"""The heuristic scorer's fast path measures exactly what its plain definition does (issue 4).

``HeuristicScorer.score`` cuts the distinct tokens to the lexicon words once, tokenises
and counts ASCII prompts through byte tables, counts sentence ends as one substring and
skips phrases whose inner word is missing: all for speed. ``plain_features`` below is
the scorer's definition written plainly (the code before those changes): the two must
give the same 17 features on every prompt of ``data/prompts``, on long mixed prompts,
on non-ASCII text, and on the RouteLLM development prompts when ``../shared`` has them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from magi.routing import scorer as s
from magi.routing.scorer import HeuristicScorer

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "routellm" / "dev.jsonl"


def plain_features(prompt: str) -> dict[str, int]:
    """The features as the scorer defines them, computed the straightforward way."""
    tokens = prompt.translate(s._SEPARATORS).split()
    cased = set(tokens)
    capitalised = [t for t in cased if not t.islower()]
    vocab = cased.union([t.lower() for t in capitalised])
    acronyms = mixed_case = 0
    for tok in capitalised:
        if tok.isupper():
            acronyms += len(tok) > 1
        elif tok[0].isalpha() and not tok.istitle():
            mixed_case += 1
    long_words = len([t for t in cased if len(t) > 10])
    phrases = dict.fromkeys(("reasoning", "comparison", "constraints", "code", "steps", "simple"), 0)
    low = prompt.lower()
    for key in vocab & s._PHRASE_KEYS:
        for group, phrase in s._PHRASES[key]:
            phrases[group] += phrase in low
    list_lines = len(s._LIST_ITEM_RE.findall(prompt)) + (s._FIRST_LIST_ITEM_RE.match(prompt) is not None)
    code_chars = len(prompt) - len(prompt.translate(s._CODE_CHARS))
    code_ops = len(s._CODE_OPERATOR_RE.findall(prompt))
    steps = len(vocab & s._STEPS) + phrases["steps"] + list_lines
    coding = 0
    verbs = s._CODE_VERBS.intersection([t.lower() for t in tokens[: s._CODE_VERB_WINDOW]])
    if verbs:
        coding = 1 if phrases["code"] or (vocab & s._CODE_ARTIFACTS) - verbs else 0
    return {
        "length_words": len(tokens),
        "questions_marks": prompt.count("?"),
        "steps_cues": steps,
        "code_fences": (prompt.count("```") + 1) // 2,
        "code_syntax": len(vocab & s._CODE_SYNTAX) + mixed_case + min(code_chars, 6) + code_ops,
        "code_terms": len(vocab & s._CODE_TERMS) + phrases["code"],
        "math_terms": len(vocab & s._MATH_TERMS),
        "math_symbols": len(prompt) - len(prompt.translate(s._MATH_CHARS)),
        "reasoning_strong": len(vocab & s._REASONING_STRONG),
        "reasoning_weak": len(vocab & s._REASONING_WEAK) + phrases["reasoning"],
        "comparison_cues": len(vocab & s._COMPARISON) + phrases["comparison"],
        "constraints_cues": len(vocab & s._CONSTRAINTS) + phrases["constraints"],
        "multipart_sentences": len(s._SENTENCE_END_RE.findall(prompt)),
        "multipart_commas": prompt.count(","),
        "jargon_terms": long_words + acronyms,
        "simple_cues": len(vocab & s._SIMPLE) + phrases["simple"],
        "coding_request": coding,
    }


def _prompts(path: Path) -> list[str]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return [row["prompt"] for row in rows if "prompt" in row]


REAL = [p for path in sorted((ROOT / "data" / "prompts").glob("*.jsonl")) for p in _prompts(path)]


def _long(count: int, chars: int, seed: int) -> list[str]:
    """Real prompts in shuffled orders, joined and cut to ``chars`` (as the bench builds them)."""
    rng, pool, out = random.Random(seed), list(REAL), []
    for _ in range(count):
        rng.shuffle(pool)
        out.append("\n\n".join(pool)[:chars])
    return out


EDGE = [
    "",
    " ",
    "?",
    "1. first\n2. second\n- third\n\u2022 fourth",
    "Why is O(n log n) better? Show that a == b => c; x::y() -> z ==> w",
    "ÉCOLE Straße naïve café TCP/IP fooBar iPhone c++ c# H2O A1 X-ray",
    "Écris une fonction Python qui trie une liste \u2014 en une ligne \u2026 \u00abvite\u00bb",
    "\u4f60\u597d\uff0c\u8bf7\u89e3\u91ca\u9012\u5f52 recursion \u3002 How does it work?",
    "ΣΑΣ σας İstanbul ǅ ﬁle \u212aelvin\x1c\x1dsep\x1e\x1fwords\x85next\u00a0nbsp",
    "Tell me a joke. How do you say thanks? What does the word 'irony' mean? In one line, please!",
    "```python\ndef f(x_y):\n    return {x_y; 1}\n```\nExplain step by step, then compare pros and cons.",
    "a.\nb? c! d.e f. ",
]


@pytest.mark.parametrize(
    "name, prompts",
    [
        ("data/prompts", REAL),
        ("2,000-character mixes", _long(64, 2000, 0)),
        ("8,000-character mixes", _long(8, 8000, 1)),
        ("edge cases", EDGE),
    ],
)
def test_the_fast_path_gives_the_plain_features(name: str, prompts: list[str]) -> None:
    scorer = HeuristicScorer()
    for prompt in prompts:
        assert scorer.score(prompt).features == plain_features(prompt), f"{name}: {prompt[:80]!r}"


@pytest.mark.skipif(not DEV.exists(), reason=f"{DEV} is not there (the shared RouteLLM data)")
def test_the_fast_path_gives_the_plain_features_on_the_routellm_dev_prompts() -> None:
    scorer = HeuristicScorer()
    for prompt in _prompts(DEV):
        assert scorer.score(prompt).features == plain_features(prompt), prompt[:80]
