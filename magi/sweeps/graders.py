"""Graders: how good is one answer, as a float in [0, 1], with its reason kept.

One home for every grader a prompt set may name (``docs/SWEEPS.md`` "Graders" lists
the fields each reads). A prompt set chooses a default grader (its ``defaults``
line) and a prompt may choose its own (its ``grader`` field):

* ``contains`` - one of ``expected`` occurs in the answer (case-insensitive): the
  bench's "hit" (1 or 0);
* ``exact``    - the answer, stripped of surrounding space, quotes and a final full
  stop, equals one of ``expected`` (case-insensitive);
* ``regex``    - ``pattern`` matches somewhere in the answer (Python ``re.search``,
  case-insensitive);
* ``number``   - the last number in the answer equals ``expected`` (the GSM8K
  convention; ``1,234``, ``-3``, ``+2.50``, ``$12``, ``3/4`` and ``1e3`` are numbers,
  compared with a relative tolerance of 1e-6);
* ``choice``   - the letter the answer chooses (``A``-``E``) is ``expected`` (the MMLU
  convention; see :func:`chosen_letter` for the phrasings understood);
* ``python``   - the code in the answer passes the prompt's ``test`` (the HumanEval
  convention: ``code`` + completion + ``test`` + ``check(entry_point)``, run in a
  subprocess with a time limit, memory and CPU limits and sockets blocked);
* ``judge``    - a model grades the answer against ``rubric`` and the reference
  (``reference``, else ``expected``) from 0 to 10; the grade is that / 10 and the
  judgement is kept as the reason.

A grade that could not be given (a judge whose answer holds no grade) is a
:class:`Grade` with ``value`` ``None`` and the ``error``: it is recorded with the
answer, counted as a grade error, and the bench goes on. An answer that fails its
tests, hangs (``error`` "timeout") or crashes is graded 0 with the cause.

Example:
    >>> from magi.sweeps.graders import grade_answer
    >>> from magi.sweeps.prompts import Prompt
    >>> grade_answer(Prompt("2+2?", grader="number", expected=("4",)), "So the answer is 4.").value
    1.0
    >>> chosen_letter("The correct answer is (C) because ...")
    'C'
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from magi.sweeps.prompts import Prompt

#: Time limit of a ``python`` task's tests when the prompt set sets no ``timeout_s``.
DEFAULT_TIMEOUT_S = 10.0
#: Address-space limit of a ``python`` task's process.
MEMORY_LIMIT_MB = 1024
#: Largest file a ``python`` task's process may write (its error output included).
OUTPUT_LIMIT_MB = 16
#: Longest reason / error text kept with a grade.
REASON_LIMIT = 1000
#: Letters the ``choice`` grader understands.
CHOICE_LETTERS = "ABCDE"


@dataclass(frozen=True)
class Grade:
    """The grade of one answer: ``value`` in [0, 1] (``None``: no grade could be
    given, see ``error``), the grader's name, why (``reason``) and what went wrong
    (``error``: a failed test's exception, "timeout", an unparseable judgement)."""

    value: float | None
    grader: str
    reason: str = ""
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The grade as the results file stores it (``grade``, ``grader``, ``reason``, ``grade_error``)."""
        data = asdict(self)
        return {
            "grade": data["value"],
            "grader": data["grader"],
            "reason": data["reason"],
            "grade_error": data["error"],
        }


#: What a ``judge`` grade asks a model: ``ask(model_id, text) -> judgement text``.
JudgeAsk = Callable[[str, str], str]


@dataclass(frozen=True)
class GraderSpec:
    """A grader: its name, the prompt fields it needs, and what it does."""

    name: str
    needs: tuple[str, ...]
    grade: Callable[..., Grade]
    summary: str


def _clip(text: str, limit: int = REASON_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


def visible_answer(answer: str) -> str:
    """``answer`` without reasoning blocks (``<think>...</think>``), which reasoning
    models write before the answer proper and which hold numbers and letters of
    their own."""
    return _THINK.sub(" ", answer)


# -- contains / exact / regex --------------------------------------------------------
def grade_contains(prompt: Prompt, answer: str, **_: Any) -> Grade:
    """1 if one of ``expected`` occurs in ``answer`` (case-insensitive), else 0."""
    low = answer.lower()
    found = next((e for e in prompt.expected if e.lower() in low), None)
    if found is None:
        return Grade(0.0, "contains", f"none of {list(prompt.expected)} in the answer")
    return Grade(1.0, "contains", f"contains {found!r}")


def _normal(text: str) -> str:
    text = " ".join(text.strip().split()).lower()
    text = text.strip("\"'`*")
    return text[:-1].rstrip() if text.endswith(".") else text


def grade_exact(prompt: Prompt, answer: str, **_: Any) -> Grade:
    """1 if the answer equals one of ``expected`` once both are normalised (case,
    runs of space, surrounding quotes or ``**``, a final full stop), else 0."""
    got = _normal(visible_answer(answer))
    found = next((e for e in prompt.expected if _normal(e) == got), None)
    if found is None:
        return Grade(0.0, "exact", f"{_clip(got, 80)!r} is none of {list(prompt.expected)}")
    return Grade(1.0, "exact", f"equals {found!r}")


def grade_regex(prompt: Prompt, answer: str, **_: Any) -> Grade:
    """1 if ``pattern`` matches somewhere in the answer (``re.search``, case-insensitive)."""
    assert prompt.pattern is not None
    match = re.search(prompt.pattern, visible_answer(answer), re.IGNORECASE)
    if match is None:
        return Grade(0.0, "regex", f"/{prompt.pattern}/ does not match")
    return Grade(1.0, "regex", f"/{prompt.pattern}/ matches {_clip(match.group(0), 80)!r}")


# -- number ----------------------------------------------------------------------------
_NUMBER = re.compile(
    r"(?<![\w.])[-+\u2212]?\$?"
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?|\.\d+)"
)


def parse_number(text: str) -> float | None:
    """The value of one number as :data:`_NUMBER` finds it (``"1,234"`` 1234,
    ``"-3/4"`` -0.75, ``"\u22122"`` -2, ``"$5"`` 5); ``None`` if it is not one.

    Example:
        >>> parse_number("1,234.5"), parse_number("3/4"), parse_number("\u22122"), parse_number("x")
        (1234.5, 0.75, -2.0, None)
    """
    text = text.strip().replace("\u2212", "-").replace("$", "").replace(",", "")
    text = re.sub(r"\s+", "", text)
    try:
        if "/" in text:
            value = Fraction(text)
            return float(value)
        number = float(text)
    except (ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def last_number(answer: str) -> tuple[str, float] | None:
    """The last number in ``answer`` (reasoning blocks left out) as ``(text, value)``;
    ``None`` if there is none.

    Example:
        >>> last_number("3 apples and 4 pears: 7 fruits. #### 7")
        ('7', 7.0)
    """
    for match in reversed(list(_NUMBER.finditer(visible_answer(answer)))):
        value = parse_number(match.group(0))
        if value is not None:
            return match.group(0).strip(), value
    return None


def numbers_equal(a: float, b: float) -> bool:
    """Equal within a relative tolerance of 1e-6 (absolute 1e-9 near zero)."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def grade_number(prompt: Prompt, answer: str, **_: Any) -> Grade:
    """1 if the last number in the answer equals one of ``expected``, else 0."""
    found = last_number(answer)
    if found is None:
        return Grade(0.0, "number", "no number in the answer")
    text, value = found
    wanted = [v for v in (parse_number(e) for e in prompt.expected) if v is not None]
    if any(numbers_equal(value, w) for w in wanted):
        return Grade(1.0, "number", f"last number {text} equals the expected {prompt.expected[0]}")
    return Grade(0.0, "number", f"last number {text} is not {' or '.join(prompt.expected)}")


# -- choice ----------------------------------------------------------------------------
_L = f"[{CHOICE_LETTERS}]"
_CHOICE_PATTERNS = (
    # "The answer is (B)", "Answer: B", "correct option is C", "I choose D", "**Answer:** E"
    re.compile(
        rf"(?:answer|option|choice|choose|chose|select|pick)\w*\W{{0,6}}(?:is|would be|:|=)?\W{{0,6}}"
        rf"(?:option|choice|letter)?\W{{0,3}}\(?((?-i:{_L})|[a-e](?=\)|\s*$|[.,;]))\)?(?![\w'])",
        re.IGNORECASE,
    ),
    # "B) Paris", "(B)", "B." or "B" as the first thing said
    re.compile(rf"^\W{{0,4}}\(?({_L})(?:[).:\]]|$|\s*[-\u2013]|\s+(?=[A-Z0-9]))"),
    # "(C)" anywhere
    re.compile(rf"\(({_L})\)"),
)


def chosen_letter(answer: str) -> str | None:
    """The letter (A-E) an answer chooses, or ``None`` when it chooses none or several.

    Tried in order: a stated answer ("The answer is (B)", "Answer: B", "the correct
    option is C", "I choose D"; the last such statement counts), a letter the answer
    starts with ("B", "B) Paris", "(B)", "B. Paris"), a letter in parentheses, then a
    capital letter standing alone ("B is right") if only one letter does. The
    phrasing is matched case-insensitively, the letter only as a capital (or a small
    letter that ends the statement: "answer: c"), so the article "a" is not read as a
    choice.

    Example:
        >>> [chosen_letter(a) for a in ("B", "Answer: c", "(D) Paris", "I think A or B", "none")]
        ['B', 'C', 'D', None, None]
    """
    text = visible_answer(answer).strip()
    stated = list(_CHOICE_PATTERNS[0].finditer(text))
    if stated:
        return stated[-1].group(1).upper()
    first = _CHOICE_PATTERNS[1].search(text)
    if first:
        return first.group(1).upper()
    bracketed = {m.group(1).upper() for m in _CHOICE_PATTERNS[2].finditer(text)}
    if len(bracketed) == 1:
        return bracketed.pop()
    alone = {m.group(1) for m in re.finditer(rf"(?<![\w'-])({_L})(?![\w'-])", text)}
    if len(alone) > 1 and re.search(r"(?<![\w'-])A (?!(?:or|and|is|was|seems)\b)[a-z]", text):
        alone.discard("A")  # "A good choice is B": the article, not a letter
    return alone.pop() if len(alone) == 1 else None


def grade_choice(prompt: Prompt, answer: str, **_: Any) -> Grade:
    """1 if the letter the answer chooses (:func:`chosen_letter`) is ``expected``, else 0."""
    letter = chosen_letter(answer)
    wanted = {e.strip().upper() for e in prompt.expected}
    if letter is None:
        return Grade(0.0, "choice", "the answer chooses no single letter")
    if letter in wanted:
        return Grade(1.0, "choice", f"chose {letter}")
    return Grade(0.0, "choice", f"chose {letter}, expected {'/'.join(sorted(wanted))}")


# -- python ----------------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def extract_code(answer: str, entry_point: str | None = None) -> str:
    """The code of an answer: the fenced block that defines ``entry_point`` (else the
    first fenced block), else the answer from its ``def entry_point`` on, else the
    answer as it is (a HumanEval-style completion of the function's body).

    Example:
        >>> extract_code("Sure:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.", "f")
        'def f():\\n    return 1\\n'
    """
    answer = visible_answer(answer)
    blocks = [b for b in _FENCE.findall(answer) if b.strip()]
    if blocks:
        if entry_point:
            defining = [b for b in blocks if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
            if defining:
                return defining[0]
        return blocks[0]
    if entry_point:
        match = re.search(rf"^[ \t]*def\s+{re.escape(entry_point)}\s*\(", answer, re.MULTILINE)
        if match:
            return textwrap.dedent(answer[match.start() :])
    return answer


#: Runs a task's program: ``argv`` is CPU seconds, address-space MB, file-size MB, the program's path.
#: Limits and the socket block are set here, in the child, before the program runs (not
#: in a ``preexec_fn``, which is unsafe in a process with threads, as a bench is).
_HARNESS = """\
import resource, runpy, socket, sys
import _socket

cpu, memory_mb, output_mb, program = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)
resource.setrlimit(resource.RLIMIT_FSIZE, (output_mb * 1024 * 1024,) * 2)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _blocked(*args, **kwargs):
    raise OSError("network access is disabled in MAGI's python grader")


class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _blocked()


socket.socket = _NoSocket
_socket.socket = _NoSocket
for _name in ("create_connection", "create_server", "getaddrinfo", "socketpair", "fromfd"):
    setattr(socket, _name, _blocked)
sys.argv = [program]
runpy.run_path(program, run_name="__main__")
"""


def python_program(prompt: Prompt, answer: str) -> str:
    """The program a ``python`` task runs: ``code`` (the function's signature and
    docstring), the code of the answer, ``test``, then ``check(entry_point)``."""
    body = extract_code(answer, prompt.entry_point)
    parts = [prompt.code or "", body, prompt.test or ""]
    if prompt.entry_point:
        parts.append(f"check({prompt.entry_point})")
    return "\n\n".join(p.rstrip("\n") for p in parts if p) + "\n"


def _error_line(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if lines:
        last = lines[-1]
        if last in ("AssertionError", "AssertionError:"):
            where = next((line for line in reversed(lines) if line.startswith("File ")), "")
            where = re.sub(r'"[^"]*/(task\.py)"', r"\1", where)
            return f"AssertionError (a test failed{': ' + where if where else ''})"
        return last
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def run_python(program: str, *, timeout_s: float, memory_mb: int = MEMORY_LIMIT_MB) -> tuple[bool, str]:
    """Run ``program`` in a fresh ``python -I`` subprocess in an empty temporary folder,
    sockets blocked, CPU time, address space and file size limited; ``(passed, cause)``.

    ``cause`` is "passed", "timeout" (more than ``timeout_s`` seconds of wall time;
    the process group is killed) or the error's last line.
    """
    cpu = max(int(math.ceil(timeout_s)) + 1, 1)
    with tempfile.TemporaryDirectory(prefix="magi-grade-") as folder:
        harness = Path(folder) / "_magi_harness.py"
        task = Path(folder) / "task.py"
        harness.write_text(_HARNESS, encoding="utf-8")
        task.write_text(program, encoding="utf-8")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": folder,
        }
        errors = Path(folder) / "stderr.txt"
        try:
            with errors.open("wb") as sink:  # a file: its size is limited too, a pipe's is not
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-I",
                        str(harness),
                        str(cpu),
                        str(memory_mb),
                        str(OUTPUT_LIMIT_MB),
                        str(task),
                    ],
                    cwd=folder,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=sink,
                    start_new_session=True,
                )
        except OSError as exc:
            return False, f"could not start python: {exc}"
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            return False, "timeout"
        _kill_group(proc)  # what the program left running in the background
        if errors.stat().st_size >= OUTPUT_LIMIT_MB * 1024 * 1024:
            return False, f"output limit: more than {OUTPUT_LIMIT_MB} MB written to stderr"
        with errors.open("rb") as written:
            written.seek(max(errors.stat().st_size - 65536, 0))
            stderr = written.read().decode("utf-8", "replace")
        if proc.returncode == 0:
            return True, "passed"
        if proc.returncode == -signal.SIGXCPU:  # its CPU time ran out before the wall clock
            return False, "timeout"
        return False, _clip(_error_line(stderr, proc.returncode), 300)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.returncode is None:
            proc.kill()


def grade_python(prompt: Prompt, answer: str, **_: Any) -> Grade:
    """1 if the answer's code passes the prompt's tests, else 0 with the cause."""
    timeout = prompt.timeout_s if prompt.timeout_s is not None else DEFAULT_TIMEOUT_S
    passed, cause = run_python(python_program(prompt, answer), timeout_s=timeout)
    if passed:
        return Grade(1.0, "python", "tests passed")
    reason = f"tests did not finish in {timeout:g} s" if cause == "timeout" else "tests failed"
    return Grade(0.0, "python", reason, error=_clip(cause, 300))


# -- judge -----------------------------------------------------------------------------
JUDGE_TEMPLATE = """You grade answers. Read the question, the reference answer and the rubric, \
then the answer to grade. Give your reasons in one or two sentences, then the grade from 0 \
(wrong or useless) to 10 (fully correct) on the last line as "Grade: N".

Question:
{question}

Reference answer:
{reference}

Rubric:
{rubric}

Answer to grade:
{answer}

Reasons and grade:"""

_GRADE_PATTERNS = (
    re.compile(
        r"\b(?:grade|score|rating)\b\W{0,5}(?:is|of|=)?\W{0,3}(\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*10)?", re.I
    ),
    re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.I),
    re.compile(r"^\W*(\d+(?:\.\d+)?)\W*$"),
)


def parse_judgement(text: str) -> float:
    """The 0-10 grade in a judge's text: the last "Grade: N" (also "score", "rating",
    "N/10", "N out of 10"), else a text that is only a number.

    Raises:
        ValueError: no grade in the text, or one outside 0-10 (the message says which).

    Example:
        >>> parse_judgement("Mostly right but misses a case.\\nGrade: 7"), parse_judgement("8/10")
        (7.0, 8.0)
    """
    text = visible_answer(text)
    for pattern in _GRADE_PATTERNS:
        found = list(pattern.finditer(text.strip()))
        if found:
            value = float(found[-1].group(1))
            if not 0 <= value <= 10:
                raise ValueError(f"the judge's grade {found[-1].group(1)} is outside 0-10")
            return value
    raise ValueError(f"no grade from 0 to 10 in the judgement {_clip(text, 120)!r}")


def judge_request(prompt: Prompt, answer: str) -> str:
    """The text a judge model is asked (:data:`JUDGE_TEMPLATE` filled in)."""
    reference = prompt.reference or " / ".join(prompt.expected) or "(none given)"
    return JUDGE_TEMPLATE.format(
        question=prompt.prompt.strip(),
        reference=reference,
        rubric=(prompt.rubric or "Is the answer correct and does it answer the question?").strip(),
        answer=answer.strip() or "(empty)",
    )


def grade_judge(prompt: Prompt, answer: str, *, judge: JudgeAsk | None = None, **_: Any) -> Grade:
    """The judge model's 0-10 grade / 10, its judgement kept as the reason; an
    unusable judgement (or a judge that fails) is a grade error, not an exception."""
    model = prompt.judge or ""
    if judge is None:
        return Grade(None, "judge", error="no judge model to ask (grade with a Runner: the bench does)")
    try:
        text = judge(model, judge_request(prompt, answer))
    except Exception as exc:  # noqa: BLE001 - the judge failing is this answer's grade error
        return Grade(None, "judge", error=_clip(f"judge {model or '?'} failed: {exc}", 300))
    try:
        value = parse_judgement(text)
    except ValueError as exc:
        return Grade(None, "judge", reason=_clip(text), error=str(exc))
    return Grade(value / 10, "judge", reason=_clip(text))


GRADERS: dict[str, GraderSpec] = {
    spec.name: spec
    for spec in (
        GraderSpec("contains", ("expected",), grade_contains, "one of 'expected' occurs in the answer"),
        GraderSpec("exact", ("expected",), grade_exact, "the answer equals one of 'expected'"),
        GraderSpec("regex", ("pattern",), grade_regex, "'pattern' matches the answer"),
        GraderSpec("number", ("expected",), grade_number, "the last number equals 'expected'"),
        GraderSpec("choice", ("expected",), grade_choice, "the chosen letter A-E is 'expected'"),
        GraderSpec("python", ("test",), grade_python, "the answer's code passes 'test'"),
        GraderSpec("judge", (), grade_judge, "a model grades against 'rubric' and the reference"),
    )
}


def grader_names() -> list[str]:
    """The graders a prompt set may name."""
    return list(GRADERS)


def grade_answer(prompt: Prompt, answer: str, *, judge: JudgeAsk | None = None) -> Grade | None:
    """Grade ``answer`` to ``prompt`` with the prompt's grader; ``None`` when it has
    none (no ``grader`` and no ``expected``). A grader that raises (a bug, or an
    answer no grader foresaw) gives a grade error for this answer only."""
    name = prompt.grader_name
    if name is None:
        return None
    spec = GRADERS[name]
    try:
        return spec.grade(prompt, answer, judge=judge)
    except Exception as exc:  # noqa: BLE001 - one answer's grade must not end the bench
        return Grade(None, name, error=_clip(f"{type(exc).__name__}: {exc}", 300))
