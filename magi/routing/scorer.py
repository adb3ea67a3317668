"""Complexity scorers: how hard a prompt looks, on a 0-10 scale, with the reasons.

The router sends a prompt to the first tier whose ``max_score`` is at least the
prompt's score, so the scorer is the one knob that decides which model answers.
A scorer must therefore be *explainable* (every answer's trace shows why it was
routed where it was), *deterministic* (the same prompt always routes the same way,
which makes sweeps comparable), and *cheap* (it runs before every request, so it
must cost microseconds, not a model call).

Scorers register by name, like tasks and balancers; ``MagiConfig.scorer`` selects
one:

    >>> from magi.routing.scorer import get_scorer
    >>> scorer = get_scorer("heuristic")
    >>> result = scorer.score("Prove that there are infinitely many primes.")
    >>> result.score > scorer.score("Hello!").score
    True
    >>> print(scorer.score("Hello!").explain())
    0.00 = simple -1.00 (cues 1), length +0.04 (words 1); clipped to 0

A new scorer is any object with a ``name`` and a ``score(prompt)`` method:

    >>> from magi.routing.scorer import ComplexityScore, register_scorer
    >>> @register_scorer("constant-doc-example")
    ... class ConstantScorer:
    ...     name = "constant-doc-example"
    ...     def __init__(self, value: float = 5.0) -> None:
    ...         self.value = value
    ...     def score(self, prompt: str) -> ComplexityScore:
    ...         return ComplexityScore(self.value, {}, {"constant": self.value})
    >>> get_scorer("constant-doc-example", value=2.0).score("anything").score
    2.0
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from magi.errors import ConfigError, did_you_mean, format_options

if TYPE_CHECKING:
    from magi.config.app import MagiConfig

MAX_SCORE = 10.0
"""Upper end of the complexity scale; tier thresholds are compared against it."""


@dataclass(frozen=True)
class ComplexityScore:
    """A prompt's complexity and the evidence behind it.

    Attributes:
        score: The complexity in ``[0, 10]``; the router compares it with each tier's
            ``max_score``.
        features: Raw measurements (word count, number of code terms...). A feature
            whose name starts with ``<contribution>_`` is shown next to that
            contribution by :meth:`explain`.
        contributions: Points each feature group added (negative: made the prompt
            look easier). ``score`` is their sum (:attr:`raw`) clipped to ``[0, 10]``,
            or mapped onto that scale by the scorer (the heuristic scorer does).
        scorer: Name of the scorer that produced this score (for traces).
        on_scale: Contributions added to ``score`` itself, on the 0-10 scale, after the
            scorer's own mapping (the router's ``conversation`` term, see
            :func:`magi.routing.router.conversation_score`); they are not part of
            :attr:`raw`.
    """

    score: float
    features: dict[str, float] = field(default_factory=dict)
    contributions: dict[str, float] = field(default_factory=dict)
    scorer: str = ""
    on_scale: tuple[str, ...] = ()

    @property
    def raw(self) -> float:
        """The unclipped sum of the scorer's own contributions (not :attr:`on_scale`)."""
        return sum(v for k, v in self.contributions.items() if k not in self.on_scale)

    def plus(self, name: str, points: float, features: Mapping[str, float]) -> ComplexityScore:
        """This score with ``points`` added on the 0-10 scale as contribution ``name``;
        ``features`` are its evidence (``<name>_*``). The score stays in ``[0, 10]``, and
        the contribution records what was really added (less than ``points`` at 10)."""
        score = round(min(MAX_SCORE, max(0.0, self.score + points)), 2)
        return ComplexityScore(
            score=score,
            features={**self.features, **features},
            contributions={**self.contributions, name: round(score - self.score, 4)},
            scorer=self.scorer,
            on_scale=(*self.on_scale, name),
        )

    def ranked(self) -> list[tuple[str, float, str]]:
        """The non-zero contributions, largest effect first, each with its evidence.

        Items are ``(name, points, evidence)``; the evidence lists the features named
        ``<name>_*``, e.g. ``("code", 2.0, "fences 1, terms 3")``. The trace and
        ``magi route`` show the first few as the reasons for a routing decision.
        """
        items: list[tuple[str, float, str]] = []
        for name, points in sorted(self.contributions.items(), key=lambda kv: (-abs(kv[1]), kv[0])):
            if points == 0:
                continue
            prefix = name + "_"
            evidence = ", ".join(
                f"{key[len(prefix) :].replace('_', ' ')} {_fmt_number(value)}"
                for key, value in self.features.items()
                if key.startswith(prefix) and value
            )
            items.append((name, points, evidence))
        return items

    def explain(self) -> str:
        """One line saying why the prompt scored what it did, largest effect first.

        Example: ``"7.45 = reasoning +2.50 (terms 2), code +2.00 (fences 1, terms 3),
        length +0.95 (words 57)"``.
        """
        parts = [
            f"{name.replace('_', ' ')} {points:+.2f}" + (f" ({evidence})" if evidence else "")
            for name, points, evidence in self.ranked()
        ]
        if not parts:
            parts.append("no complexity cues")
        text = f"{self.score:.2f} = " + ", ".join(parts)
        raw = self.raw
        clipped = min(MAX_SCORE, max(0.0, raw))
        added = sum(self.contributions[k] for k in self.on_scale)
        if self.on_scale:
            # the scorer's own score, before the on-scale terms: is it its raw sum clipped?
            base = round(self.score - added, 2)
            if abs(round(clipped, 2) - base) > 0.005:
                text += f"; raw {raw:.2f} is {base:.2f} on the 0-10 scale, before {', '.join(self.on_scale)}"
        elif abs(round(clipped, 2) - self.score) > 0.005:
            text += f"; raw {raw:.2f} on the 0-10 scale"
        elif raw > MAX_SCORE or raw < 0:
            text += f"; clipped to {0 if raw < 0 else MAX_SCORE:g}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain data for traces and JSON."""
        return {
            "score": self.score,
            "scorer": self.scorer,
            "features": dict(self.features),
            "contributions": dict(self.contributions),
            "explanation": self.explain(),
        }


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


@runtime_checkable
class Scorer(Protocol):
    """Anything that rates a prompt's complexity. Implementations must be thread-safe
    (the router calls ``score`` from every request thread) and deterministic."""

    name: str

    def score(self, prompt: str) -> ComplexityScore:
        """Rate ``prompt`` on the 0-10 scale."""
        ...


# -- registry ---------------------------------------------------------------------
ScorerFactory = Callable[..., Scorer]
_SCORERS: dict[str, ScorerFactory] = {}
_registry_lock = threading.Lock()


def register_scorer(name: str, *, replace: bool = False) -> Callable[[ScorerFactory], ScorerFactory]:
    """Decorator: make a scorer class (or factory function) selectable as ``scorer=<name>``.

    Registering a name twice is a programming error unless ``replace=True``, so two
    plugins cannot silently shadow each other. Re-running the same definition (same
    module and qualified name, as when a notebook cell runs again) replaces it.
    """

    def add(factory: ScorerFactory) -> ScorerFactory:
        with _registry_lock:
            existing = _SCORERS.get(name)
            if existing is not None and not replace and not _same_definition(existing, factory):
                raise ValueError(f"a scorer named '{name}' is already registered ({existing!r})")
            _SCORERS[name] = factory
        return factory

    return add


def _same_definition(a: object, b: object) -> bool:
    """Same object, or the same module-level name defined again (notebook re-runs)."""
    key = ("__module__", "__qualname__")
    return a is b or all(getattr(a, k, None) == getattr(b, k, object()) for k in key)


def available_scorers() -> list[str]:
    """Names accepted by :func:`get_scorer` (and by the ``scorer`` config field)."""
    with _registry_lock:
        return sorted(_SCORERS)


def get_scorer(name: str, **kwargs: Any) -> Scorer:
    """Build the scorer registered as ``name``; ``kwargs`` go to its constructor.

    Raises:
        ConfigError: ``name`` is not registered (the message suggests the closest
            name and lists the available ones), or the scorer rejects ``kwargs``.
    """
    with _registry_lock:
        factory = _SCORERS.get(name)
        names = sorted(_SCORERS)
    if factory is None:
        hint = did_you_mean(name, names)
        raise ConfigError([f"scorer: unknown scorer '{name}'.{hint} Available: {format_options(names)}"])
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError([f"scorer: scorer '{name}' does not accept these options: {exc}"]) from exc


def config_scorer(config: MagiConfig) -> Scorer:
    """The scorer a validated config names: ``scorer`` with its ``scorer_options`` (the one
    place the Runner, its router and ``magi route`` build it from a config)."""
    return get_scorer(config.scorer, **config.scorer_options)


# -- the heuristic scorer -----------------------------------------------------------
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Distinct lexicon hits count once: repeating a word does not make a prompt harder.
_REASONING_STRONG = _words(
    "prove proof proofs derive derivation justify analyse analyze analysis critique "
    "design architect architecture optimise optimize evaluate assess diagnose "
    "rigorous rigorously tradeoff tradeoffs trade-off trade-offs implications "
    "investigate formalise formalize correctness fallacy fallacies"
)
_REASONING_WEAK = _words(
    "why explain explaining reason reasons reasoning discuss recommend justification "
    "causes consequences mechanism strategy strategies plan detailed considering "
    "consider implication argue argument infer evidence interpret predict"
)
_COMPARISON = _words(
    "compare compared comparing comparison versus vs vs. difference differences differ "
    "differs distinguish distinguishing advantages disadvantages contrast similarities "
    "better worse tradeoffs alternatives"
)
_CONSTRAINTS = _words(
    "must exactly without ensure ensuring require required requires requirement requirements "
    "constraint constraints guarantee guarantees strictly avoid avoiding handle handles "
    "maximum minimum within downtime rollback validation"
)
_STEPS = _words(
    "step steps step-by-step stepwise first then finally next afterwards stage stages phase phases "
    "procedure walkthrough working"
)
_CONNECTORS = _words("also additionally furthermore moreover besides then and/or")
_CODE_SYNTAX = _words(
    "def lambda async await const struct impl fn void nullptr printf println malloc "
    "typedef namespace elif isinstance kwargs args self this std pip npm sudo "
    "return import class null none bool boolean enum dict"
)
_CODE_TERMS = _words(
    "code function functions method methods implement implementation refactor debug "
    "debugging bug bugs error exception traceback stacktrace compile compiler runtime "
    "algorithm algorithms api apis endpoint database databases schema query queries sql "
    "regex thread threads thread-safe concurrency concurrent deadlock deadlocks race "
    "mutex semaphore cache caching memory leak leaks pointer recursion recursive "
    "python java javascript typescript rust golang c c++ c# kotlin haskell bash "
    "shell linux kubernetes docker container containers microservice microservices "
    "server latency throughput gpu cuda pytorch tensorflow numpy pandas json csv yaml "
    "http tcp udp dns git unit test tests testing deploy deployment backend frontend "
    "repository library framework interface parse parser parsing serialize index "
    "indexing hash hashmap heap tree graph array string integer variable loop "
    "iterator generator decorator callback callbacks promise lock locking transaction "
    "transactions replica replicas replication partition distributed protocol "
    "crate crates jvm oom segfault syntax script compile-time"
)
_MATH_TERMS = _words(
    "integral integrals integrate integration derivative derivatives differentiate "
    "theorem lemma corollary matrix matrices eigenvalue eigenvalues eigenvector "
    "eigenvectors probability probabilities expectation variance polynomial "
    "polynomials equation equations prime primes converge converges convergence limit "
    "series modulo modular combinatorics permutation permutations combinations vector "
    "vectors gradient inequality induction irrational rational logarithm logarithmic "
    "exponential recurrence asymptotic complexity regression residuals statistics "
    "statistical distribution bayes bayesian geometry triangle calculus algebra "
    "algebraic topology sqrt infinite infinitely finite factorial fibonacci hypothesis "
    "invertible linear nonlinear differential stochastic optimisation optimization "
    "closed-form transformation random variables"
)
# A request to write code: one of these verbs among the first words (an imperative,
# "can you write", "I need to write") and another word naming a code artifact or a
# language (below). Words common in small talk ("go", "class", "library") are left out.
_CODE_VERBS = _words(
    "write implement create build code generate make develop rewrite refactor "
    "port convert add extend fix optimise optimize"
)
_CODE_VERB_WINDOW = 5
_CODE_ARTIFACTS = _words(
    "function functions method methods script scripts program programs "
    "query queries regex regexp api endpoint component components module modules "
    "parser algorithm snippet code cli bot server unittest unit stack queue heap hashmap "
    "trie linked iterator generator decorator cache lru dataclass struct enum interface "
    "python java javascript js typescript ts rust golang c++ c# kotlin haskell bash "
    "shell sql html css react vue django flask node node.js ruby php swift scala perl lua "
    "powershell quicksort mergesort bfs dfs dijkstra"
)
_SIMPLE = _words(
    "hi hello hey thanks thank greetings translate synonym antonym spell joke plural opposite briefly quick"
)

# Multi-word cues, keyed by a token the phrase contains: only phrases whose key token
# occurs in the prompt (one C-level set intersection) cost a substring scan.
_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "show": (("reasoning", "show that"),),
    "trade": (("reasoning", "trade off"),),
    "edge": (("reasoning", "edge case"),),
    "why": (("reasoning", "why does"), ("reasoning", "why is")),
    "how": (("reasoning", "how would you"), ("reasoning", "how does")),
    "depth": (("reasoning", "in depth"),),
    "root": (("reasoning", "root cause"),),
    "pros": (("comparison", "pros and cons"),),
    "which": (("comparison", "which is better"),),
    "when": (("comparison", "when would"),),
    "rather": (("comparison", "rather than"),),
    "opposed": (("comparison", "as opposed to"),),
    "least": (("constraints", "at least"),),
    "most": (("constraints", "at most"),),
    "more": (("constraints", "no more than"),),
    "less": (("constraints", "less than"),),
    "under": (("constraints", "under "),),
    "o": (("code", "o("),),
    "step": (("steps", "step by step"),),
    "walk": (("steps", "walk me through"),),
    "each": (("steps", "each step"),),
    "every": (("steps", "every step"),),
    "capital": (("simple", "capital of"),),
    "say": (("simple", "how do you say"),),
    "mean": (("simple", "what does the word"),),
    "one": (("simple", "in one sentence"), ("simple", "one word"), ("simple", "in one line")),
    "binary": (("code", "binary search"),),
    "morning": (("simple", "good morning"),),
    "night": (("simple", "good night"),),
    "are": (("simple", "how are you"),),
    "joke": (("simple", "tell me a joke"),),
}
_PHRASE_KEYS = frozenset(_PHRASES)
_PHRASE_GROUP_NAMES = ("reasoning", "comparison", "constraints", "code", "steps", "simple")
# The same phrases with their group as an index into a list of counts, and their inner
# words ("would" in "how would you"): between two spaces, an inner word is a whole token
# wherever the phrase occurs, so a prompt without it as a word cannot hold the phrase,
# and the substring scan (about 1 us on 2,000 characters) is skipped.
_PHRASE_GROUPS: dict[str, tuple[tuple[int, str, frozenset[str]], ...]] = {
    key: tuple(
        (_PHRASE_GROUP_NAMES.index(group), phrase, frozenset(phrase.split(" ")[1:-1]))
        for group, phrase in phrases
    )
    for key, phrases in _PHRASES.items()
}
_PHRASE_INNER_WORDS = frozenset().union(*(inner for group in _PHRASE_GROUPS.values() for *_, inner in group))
# Every word any lexicon or phrase key holds: a prompt's distinct tokens are cut to these
# once, and the groups are counted on that small set.
_LEXICON = frozenset().union(
    _REASONING_STRONG,
    _REASONING_WEAK,
    _COMPARISON,
    _CONSTRAINTS,
    _STEPS,
    _CONNECTORS,
    _CODE_SYNTAX,
    _CODE_TERMS,
    _MATH_TERMS,
    _CODE_ARTIFACTS,
    _SIMPLE,
    _PHRASE_KEYS,
    _PHRASE_INNER_WORDS,
)

# Tokenising = mapping punctuation to spaces, then str.split(): both run in C, three
# times faster than a findall. '+', '#', '-' and '_' stay, keeping "c++", "c#",
# "trade-off" and snake_case identifiers whole.
_SEPARATORS = str.maketrans(
    {c: " " for c in "!\"$%&'()*,./:;<=>?@[\\]^`{|}~\u201c\u201d\u2018\u2019\u2014\u2013\u2026\u00ab\u00bb"}
)
# Patterns that open with a literal (or a small character class) let the regex engine
# skip ahead with a fast search instead of trying every position.
_LIST_ITEM_RE = re.compile(r"\n[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]")
_FIRST_LIST_ITEM_RE = re.compile(r"[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]")
_CODE_OPERATOR_RE = re.compile(r"->|=>|==|::|\(\)")
_SENTENCE_END_RE = re.compile(r"[.?!][ \n]")
# One C-level pass counts a whole class of characters: delete them, compare lengths.
_CODE_CHARS = str.maketrans("", "", "{};_")
_MATH_CHARS = str.maketrans(
    "", "", "=^\\$\u2211\u222b\u221a\u2264\u2265\u2260\u03c0\u221e\u2202\u2208\u2200\u2203\u00d7\u00f7"
)
# The same for ASCII prompts (most of them), as bytes: a 256-byte table is five times
# faster than str.translate's mapping. _SEPARATOR_BYTES maps what _SEPARATORS maps; the
# counted characters (questions, commas, code and ASCII maths characters) are kept alone
# by deleting the others, and sentence ends become one two-byte substring.
_SEPARATOR_BYTES = bytes(ord(" ") if i in _SEPARATORS else i for i in range(256))
_CODE_BYTES = b"{};_"
_MATH_BYTES = b"=^\\$"
_UNCOUNTED_BYTES = bytes(i for i in range(256) if bytes([i]) not in b"?," + _CODE_BYTES + _MATH_BYTES)
_SENTENCE_BYTES = bytes.maketrans(b"?!\n", b".. ")


def to_scale(raw: float, half_point: float) -> float:
    """Map a raw sum of points onto ``[0, 10)``: ``half_point`` lands on 5, order is kept."""
    return 0.0 if raw <= 0 else MAX_SCORE * (1.0 - 2.0 ** (-raw / half_point))


def _capped(count: float, per: float, cap: float) -> float:
    """``count * per``, but never more than ``cap`` in absolute value."""
    points = count * per
    return max(-abs(cap), min(abs(cap), points)) if count else 0.0


@register_scorer("heuristic")
class HeuristicScorer:
    """A fast, explainable, rule-based complexity scorer (no model, no training).

    It adds up points from independent *cue groups*, each capped so that no single
    cue can decide the tier alone, then maps the sum (the *raw* score) onto ``[0, 10]``
    with ``10 * (1 - 2 ** (-raw / half_point))`` (a negative sum scores 0). The map is
    monotone, so the ranking is the sum's, and it never saturates; ``half_point`` (2.8)
    is the raw score that lands on 5.0, the fast tier's ``max_score`` in the seed's
    profiles. It was set on ``data/prompts/labelled.jsonl``, whose easy prompts score at
    most 1.3 raw and hard ones at least 4.3: 2.8 is the middle of that gap.

    ========== ==========================================================================
    group      cues (distinct words count once; each group is capped)
    ========== ==========================================================================
    length     word count, saturating: ``length * (1 - exp(-words / length_scale))``
    questions  each ``?`` after the first (several questions = several answers)
    steps      requested steps/enumerations: list lines, "step by step", "first... then"
    code       code fences, code syntax (``def``, ``{``, snake_case/camelCase), code terms
    math       math terms (integral, eigenvalue...), math symbols (``=``, ``^``, LaTeX)
    reasoning  strong cues (prove, derive, design, analyse, trade-off) and weak ones (why,
               explain, discuss); a bonus when reasoning meets code or math content
    comparison compare, versus, difference, pros and cons
    constraints must, exactly, without, at least, format requirements
    multipart  extra sentences and commas (several sub-requests)
    jargon     long technical words and acronyms (TCP, GPU, PostgreSQL)
    simple     greetings, thanks, translate/synonym/spell, "in one sentence": negative
    coding     a request to write code: a verb (write, implement, create...) and a code
               artifact or language (function, script, query, Python, SQL...)
    ========== ==========================================================================

    The weights are class-level (:attr:`DEFAULT_WEIGHTS`) and can be overridden per
    instance, e.g. ``get_scorer("heuristic", code_term=0.8)``. The defaults were set on
    ``data/prompts/labelled.jsonl`` and checked on ``data/prompts/holdout.jsonl``
    (``scripts/eval_scorer.py``). The scorer keeps no state between calls, so one
    instance is safe to share between threads.
    """

    name: ClassVar[str] = "heuristic"

    DEFAULT_WEIGHTS: ClassVar[Mapping[str, float]] = {
        # length: points approach `length` as words grow past `length_scale`
        "length": 2.5,
        "length_scale": 60.0,
        "question": 0.4,
        "question_cap": 1.2,
        "step": 0.5,
        "step_cap": 1.5,
        "code_fence": 1.5,
        "code_syntax": 0.25,
        "code_syntax_cap": 1.5,
        "code_term": 0.5,
        "code_term_cap": 2.5,
        "code_cap": 4.0,
        "math_term": 1.0,
        "math_term_cap": 3.0,
        "math_symbol": 0.3,
        "math_symbol_cap": 1.5,
        "math_cap": 3.5,
        "reasoning_strong": 2.0,
        "reasoning_weak": 1.0,
        "reasoning_cap": 4.0,
        # reasoning about code or math content is harder than either alone
        "technical_reasoning_bonus": 1.0,
        "comparison": 1.5,
        "comparison_cap": 2.5,
        "constraint": 0.4,
        "constraint_cap": 1.6,
        "sentence": 0.3,
        "comma": 0.1,
        "multipart_cap": 1.2,
        "jargon": 0.35,
        "jargon_cap": 1.5,
        "simple": -1.0,
        "simple_cap": 2.0,
        # a request to write code ("Write a function that...", "Implement a stack in
        # Python"): a few words, but an answer that is a program
        "coding": 2.7,
        # the raw score mapped to 5.0 on the 0-10 scale
        "half_point": 2.8,
    }

    def __init__(self, **weights: float) -> None:
        unknown = sorted(set(weights) - set(self.DEFAULT_WEIGHTS))
        if unknown:
            names = list(self.DEFAULT_WEIGHTS)
            raise ConfigError(
                [
                    f"scorer: unknown heuristic weight '{u}'.{did_you_mean(u, names)} "
                    f"Valid weights: {format_options(names)}"
                    for u in unknown
                ]
            )
        merged = {**self.DEFAULT_WEIGHTS, **{k: float(v) for k, v in weights.items()}}
        for positive in ("length_scale", "half_point"):
            if merged[positive] <= 0:
                raise ConfigError([f"scorer: heuristic weight '{positive}' must be > 0"])
        self.weights: Mapping[str, float] = merged

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.weights.items() if self.DEFAULT_WEIGHTS[k] != v}
        return f"HeuristicScorer({', '.join(f'{k}={v}' for k, v in changed.items())})"

    def score(self, prompt: str) -> ComplexityScore:
        """Rate ``prompt``; see the class docstring for the cue groups."""
        w = self.weights
        ascii_bytes = prompt.encode("ascii") if prompt.isascii() else None
        if ascii_bytes is not None:
            # the same characters mapped, through a 256-byte table: five times faster
            tokens = ascii_bytes.translate(_SEPARATOR_BYTES).decode("ascii").split()
        else:
            tokens = prompt.translate(_SEPARATORS).split()
        n_words = len(tokens)
        cased = set(tokens)
        # Only distinct tokens with capitals are lower-cased (cheaper than lowering the
        # prompt and tokenising twice); they are also the acronyms (TCP) and the mixed-case
        # names (PostgreSQL, fooBar). One pass over the distinct tokens picks them and the
        # long words: each pass costs about 30 ns a token, the most of any step.
        odd = [t for t in cased if len(t) > 10 or not t.islower()]
        # The vocabulary is only ever intersected with the lexicons (lower case), so it is
        # cut to the lexicon words once and every group is counted on that small set.
        hits = cased & _LEXICON
        acronyms = mixed_case = long_words = 0
        if odd:
            long_words = len([t for t in odd if len(t) > 10])
            capitalised = [t for t in odd if not t.islower()]
            hits.update(_LEXICON.intersection(map(str.lower, capitalised)))
            for tok in capitalised:
                if tok.isupper():
                    acronyms += len(tok) > 1
                elif not tok.istitle() and tok[0].isalpha():  # most are titles: one call
                    mixed_case += 1

        phrase_counts = [0, 0, 0, 0, 0, 0]  # in the order of _PHRASE_GROUP_NAMES
        keys = hits & _PHRASE_KEYS
        if keys:
            low = prompt.lower()
            for key in keys:
                for group, phrase, inner in _PHRASE_GROUPS[key]:
                    if inner <= hits and phrase in low:
                        phrase_counts[group] += 1
        phrase_reasoning, phrase_comparison, phrase_constraints, phrase_code, phrase_steps, phrase_simple = (
            phrase_counts
        )

        list_lines = len(_LIST_ITEM_RE.findall(prompt)) + (_FIRST_LIST_ITEM_RE.match(prompt) is not None)
        fence_marks = prompt.count("```") if "`" in prompt else 0
        fences = (fence_marks + 1) // 2
        code_ops = len(_CODE_OPERATOR_RE.findall(prompt))
        if ascii_bytes is not None:
            # the characters counted, alone: one C pass deletes the others
            counted = ascii_bytes.translate(None, _UNCOUNTED_BYTES)
            questions = counted.count(b"?")
            commas = counted.count(b",")
            code_chars = len(counted) - len(counted.translate(None, _CODE_BYTES))
            math_chars = len(counted) - len(counted.translate(None, _MATH_BYTES))
            # "[.?!][ \n]" as one two-byte substring (the two never overlap)
            sentences = ascii_bytes.translate(_SENTENCE_BYTES).count(b". ")
        else:
            questions = prompt.count("?")
            commas = prompt.count(",")
            # braces, semicolons and underscores (snake_case), capped so prose with a few
            # semicolons does not read as code
            code_chars = len(prompt) - len(prompt.translate(_CODE_CHARS))
            math_chars = len(prompt) - len(prompt.translate(_MATH_CHARS))
            sentences = len(_SENTENCE_END_RE.findall(prompt))

        reasoning_strong = len(hits & _REASONING_STRONG)
        reasoning_weak = len(hits & _REASONING_WEAK) + phrase_reasoning
        comparison = len(hits & _COMPARISON) + phrase_comparison
        constraints = len(hits & _CONSTRAINTS) + phrase_constraints
        steps = len(hits & _STEPS) + phrase_steps + list_lines
        connectors = len(hits & _CONNECTORS)
        code_syntax = len(hits & _CODE_SYNTAX) + mixed_case + min(code_chars, 6) + code_ops
        code_terms = len(hits & _CODE_TERMS) + phrase_code
        math_terms = len(hits & _MATH_TERMS)
        simple = len(hits & _SIMPLE) + phrase_simple
        coding = 0
        verbs = _CODE_VERBS.intersection(map(str.lower, tokens[:_CODE_VERB_WINDOW]))
        if verbs:
            # another word names the artifact ("code a parser", not "code" alone); code
            # phrases ("binary search") name one too
            artifacts = hits & _CODE_ARTIFACTS
            coding = 1 if phrase_code or artifacts - verbs else 0
        jargon = long_words + acronyms

        code = min(
            w["code_cap"],
            (w["code_fence"] if fences else 0.0)
            + _capped(code_syntax, w["code_syntax"], w["code_syntax_cap"])
            + _capped(code_terms, w["code_term"], w["code_term_cap"]),
        )
        math_points = min(
            w["math_cap"],
            _capped(math_terms, w["math_term"], w["math_term_cap"])
            + _capped(math_chars, w["math_symbol"], w["math_symbol_cap"]),
        )
        reasoning = min(
            w["reasoning_cap"],
            reasoning_strong * w["reasoning_strong"] + reasoning_weak * w["reasoning_weak"],
        )
        if reasoning and (code_terms or math_terms or fences):
            reasoning = min(
                w["reasoning_cap"] + w["technical_reasoning_bonus"],
                reasoning + w["technical_reasoning_bonus"],
            )

        contributions = {
            "length": round(w["length"] * (1.0 - math.exp(-n_words / w["length_scale"])), 4),
            "questions": _capped(max(questions - 1, 0), w["question"], w["question_cap"]),
            "steps": _capped(steps, w["step"], w["step_cap"]),
            "code": code,
            "math": math_points,
            "reasoning": reasoning,
            "comparison": _capped(comparison, w["comparison"], w["comparison_cap"]),
            "constraints": _capped(constraints, w["constraint"], w["constraint_cap"]),
            "multipart": min(
                w["multipart_cap"], sentences * w["sentence"] + (commas + connectors) * w["comma"]
            ),
            "jargon": _capped(jargon, w["jargon"], w["jargon_cap"]),
            "simple": _capped(simple, w["simple"], w["simple_cap"]),
            "coding": coding * w["coding"],
        }
        features = {
            "length_words": n_words,
            "questions_marks": questions,
            "steps_cues": steps,
            "code_fences": fences,
            "code_syntax": code_syntax,
            "code_terms": code_terms,
            "math_terms": math_terms,
            "math_symbols": math_chars,
            "reasoning_strong": reasoning_strong,
            "reasoning_weak": reasoning_weak,
            "comparison_cues": comparison,
            "constraints_cues": constraints,
            "multipart_sentences": sentences,
            "multipart_commas": commas,
            "jargon_terms": jargon,
            "simple_cues": simple,
            "coding_request": coding,
        }
        total = sum(contributions.values())
        return ComplexityScore(
            score=round(to_scale(total, w["half_point"]), 2),
            features=features,
            contributions=contributions,
            scorer=self.name,
        )


@register_scorer("learned")
def learned_scorer(path: str | None = None) -> Scorer:
    """The learned scorer (:class:`magi.routing.learned.LearnedScorer`): the chance that
    the fast tier fails where the strong one succeeds, from a model file (``path``,
    default the shipped ``data/scorers/learned-routellm.json``). Its module is imported
    here, when first asked for."""
    from magi.routing.learned import LearnedScorer

    return LearnedScorer(path)
