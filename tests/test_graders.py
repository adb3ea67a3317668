"""Graders (magi.sweeps.graders): each grader's convention, prompt-set validation before
anything runs, the python grader in real subprocesses (pass, fail, hang, crash, no
network), the judge on tiny GGUF models, HumanEval from the installed package, and the
bench's per-prompt results file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from magi.sweeps.graders import (
    GRADERS,
    Grade,
    chosen_letter,
    extract_code,
    grade_answer,
    last_number,
    parse_judgement,
    run_python,
)
from magi.sweeps.prompts import Prompt, PromptSetError, load_prompts
from magi.testing.runtime import TinyRuntime

ROOT = Path(__file__).resolve().parents[1]


def _set(tmp_path: Path, *lines: dict | str, name: str = "set.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# -- contains / exact / regex ------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected", "answer"),
    [
        (("Ottawa",), "The capital is ottawa."),
        (("Ottawa",), "Toronto"),
        (("fast", "swift"), "SWIFTLY"),
        (("144",), "12 x 12 = 144"),
    ],
)
def test_contains_is_the_old_hit(expected: tuple[str, ...], answer: str) -> None:
    prompt = Prompt("q", expected=expected)
    grade = grade_answer(prompt, answer)
    assert prompt.grader_name == "contains" and grade is not None
    assert grade.value == float(prompt.hit(answer)) and grade.grader == "contains"


def test_no_grader_and_no_expected_is_not_graded() -> None:
    assert grade_answer(Prompt("Hi"), "Hello") is None


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("Cold", 1.0),
        ("  cold.  ", 1.0),
        ('"cold"', 1.0),
        ("**Cold**", 1.0),
        ("cold, I think", 0.0),
        ("", 0.0),
    ],
)
def test_exact(answer: str, value: float) -> None:
    assert grade_answer(Prompt("q", grader="exact", expected=("cold",)), answer).value == value


def test_regex_searches_case_insensitively() -> None:
    prompt = Prompt("q", grader="regex", pattern=r"\b2025-01-01\b")
    assert grade_answer(prompt, "It is 2025-01-01.").value == 1.0
    assert grade_answer(prompt, "It is 2025-1-1.").value == 0.0
    assert grade_answer(Prompt("q", grader="regex", pattern="ottawa"), "OTTAWA").value == 1.0


# -- number ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "expected", "value"),
    [
        ("12 * 12 = 144", "144", 1.0),
        ("First 3, then 5, so the answer is 8.", "8", 1.0),
        ("The answer is 8. Earlier I wrote 3.", "8", 0.0),  # the *last* number counts
        ("Total: 1,234 apples", "1234", 1.0),
        ("It costs $1,234.50.", "1234.5", 1.0),
        ("It is -7 degrees", "-7", 1.0),
        ("It is \u22127 degrees", "-7", 1.0),  # a typographic minus
        ("+5", "5", 1.0),
        ("3/8 of the pizza", "0.375", 1.0),
        ("0.375", "3/8", 1.0),
        ("4.50 cups", "4.5", 1.0),
        ("Reasoning... #### 72", "72", 1.0),
        ("about 1e3", "1000", 1.0),
        ("<think>maybe 12</think>It is 7", "7", 1.0),
        ("<think>it is 7</think>I am not sure", "7", 0.0),
        ("no number here", "7", 0.0),
        ("v2 of the model", "2", 0.0),  # a digit inside a word is no number
    ],
)
def test_number_gsm8k_convention(answer: str, expected: str, value: float) -> None:
    grade = grade_answer(Prompt("q", grader="number", expected=(expected,)), answer)
    assert grade.value == value, grade.reason


def test_last_number_reports_its_text() -> None:
    assert last_number("between 1,000 and 2,500.") == ("2,500", 2500.0)
    assert last_number("none") is None


# -- choice ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("B)", "B"),
        ("(C)", "C"),
        ("C. Paris", "C"),
        ("D) Mars", "D"),
        ("The answer is B.", "B"),
        ("The correct answer is (d)", "D"),
        ("Answer: c", "C"),
        ("**Answer:** E", "E"),
        ("I would choose option A because it is first.", "A"),
        ("Mercury is closest, so B.", "B"),
        ("A good pick is D.", "D"),  # the article "A" is not a choice
        ("I choose a different approach", None),
        ("It is A or B", None),
        ("I don't know", None),
        ("<think>Is it A? No.</think>The answer is C", "C"),
    ],
)
def test_choice_letter_phrasings(answer: str, letter: str | None) -> None:
    assert chosen_letter(answer) == letter


def test_choice_grades() -> None:
    prompt = Prompt("q", grader="choice", expected=("b",))
    assert grade_answer(prompt, "Answer: B").value == 1.0
    wrong = grade_answer(prompt, "Answer: C")
    assert wrong.value == 0.0 and "chose C, expected B" in wrong.reason
    assert "no single letter" in grade_answer(prompt, "no idea").reason


# -- python: real subprocesses ---------------------------------------------------------------
ADD_TASK = Prompt(
    "Complete add",
    grader="python",
    code='def add(a, b):\n    """Return a + b."""\n',
    test="def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    entry_point="add",
    timeout_s=5,
)


@pytest.mark.parametrize(
    "answer",
    [
        "    return a + b\n",  # a HumanEval-style completion of the body
        "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nIt adds.",
        "```py\nimport operator\n\ndef add(a, b):\n    return operator.add(a, b)\n```",
        "def add(a, b):\n    return b + a",
    ],
)
def test_python_passes(answer: str) -> None:
    grade = grade_answer(ADD_TASK, answer)
    assert (grade.value, grade.error) == (1.0, None), grade


def test_python_failing_tests_grade_zero_with_the_assertion() -> None:
    grade = grade_answer(ADD_TASK, "```python\ndef add(a, b):\n    return a - b\n```")
    assert grade.value == 0.0 and grade.error is not None and grade.error.startswith("AssertionError")
    assert "/tmp" not in grade.error  # the temporary folder is not part of the cause


def test_python_hang_is_a_timeout() -> None:
    hang = Prompt("q", grader="python", test="while True:\n    pass\n", timeout_s=1)
    started = time.perf_counter()
    grade = grade_answer(hang, "x = 1")
    assert (grade.value, grade.error) == (0.0, "timeout")
    assert time.perf_counter() - started < 5


def test_python_sleeping_child_processes_are_killed_too() -> None:
    sleeper = Prompt(
        "q",
        grader="python",
        test="import subprocess, sys, time\nsubprocess.Popen(['sleep', '30'])\ntime.sleep(30)\n",
        timeout_s=1,
    )
    started = time.perf_counter()
    assert grade_answer(sleeper, "").error == "timeout"
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        ("```python\ndef add(a, b)\n    return a + b\n```", "SyntaxError"),
        ("```python\ndef add(a, b):\n    raise RuntimeError('boom')\n```", "RuntimeError: boom"),
        ("```python\nimport sys\ndef add(a, b):\n    sys.exit(3)\n```", "exit code 3"),
        ("```python\ndef add(a, b):\n    return add(a, b)\n```", "RecursionError"),
    ],
)
def test_python_crash_grades_zero_with_the_error(answer: str, cause: str) -> None:
    grade = grade_answer(ADD_TASK, answer)
    assert grade.value == 0.0 and grade.error is not None and cause in grade.error, grade


def test_python_has_no_network() -> None:
    code = "import socket\ndef check(c):\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
    grade = grade_answer(Prompt("q", grader="python", test=code, entry_point="f"), "def f():\n    pass")
    assert grade.value == 0.0 and "network access is disabled" in grade.error
    passed, cause = run_python("import _socket\n_socket.socket()\n", timeout_s=5)
    assert not passed and "network access is disabled" in cause


def test_python_output_is_limited() -> None:
    """A program that floods stderr is stopped at the file-size limit; the grader's memory is not at stake."""
    passed, cause = run_python("import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n", timeout_s=10)
    assert not passed and cause == "output limit: more than 16 MB written to stderr"


def test_python_memory_is_limited() -> None:
    passed, cause = run_python("x = bytearray(4 * 1024 ** 3)\n", timeout_s=5)
    assert not passed and "MemoryError" in cause


def test_extract_code_prefers_the_block_defining_the_entry_point() -> None:
    answer = "```python\nprint('example')\n```\nand\n```python\ndef f(x):\n    return x\n```"
    assert extract_code(answer, "f") == "def f(x):\n    return x\n"
    assert extract_code("Text first\ndef f(x):\n    return 2\n", "f") == "def f(x):\n    return 2\n"


# -- judge -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Correct and complete.\nGrade: 9", 9.0),
        ("Grade: 7/10", 7.0),
        ("Score = 6.5", 6.5),
        ("I'd rate it 8 out of 10.", 8.0),
        ("4/10 - misses the point", 4.0),
        ("10", 10.0),
        ("First I thought grade 2, but on reflection: Grade: 5", 5.0),
    ],
)
def test_parse_judgement(text: str, value: float) -> None:
    assert parse_judgement(text) == value


@pytest.mark.parametrize("text", ["", "::::::::", "Looks fine to me", "Grade: 42", "Grade: 11/10"])
def test_unparseable_judgement_raises(text: str) -> None:
    with pytest.raises(ValueError):
        parse_judgement(text)


JUDGED = Prompt("What is 2+2?", grader="judge", rubric="Correct number.", expected=("4",), judge="m")


def test_judge_grade_is_a_tenth_of_the_judgement_with_reasons_kept() -> None:
    asked: list[tuple[str, str]] = []

    def ask(model_id: str, text: str) -> str:
        asked.append((model_id, text))
        return "The answer is right.\nGrade: 8"

    grade = grade_answer(JUDGED, "4", judge=ask)
    assert grade == Grade(0.8, "judge", "The answer is right.\nGrade: 8")
    ((model, text),) = asked
    assert model == "m" and "Correct number." in text and "Reference answer:\n4" in text


def test_judge_without_a_grade_or_failing_is_a_grade_error() -> None:
    grade = grade_answer(JUDGED, "4", judge=lambda m, t: "it is nice")
    assert grade.value is None and "no grade" in grade.error and grade.reason == "it is nice"

    def broken(model_id: str, text: str) -> str:
        raise RuntimeError("model fell over")

    grade = grade_answer(JUDGED, "4", judge=broken)
    assert grade.value is None and "model fell over" in grade.error


def test_judge_on_a_tiny_model(echo_runtime: TinyRuntime) -> None:
    """A real tiny model judges: whatever it says is parsed, or recorded as a grade error."""
    from magi.sweeps.bench import judge_asker
    from magi.testing.runtime import REASONER

    with echo_runtime.runner("development", "runtime.n_ctx=1024") as runner:
        ask = judge_asker(runner.pool)
        text = ask(REASONER, "Grade this answer from 0 to 10.")
        grade = grade_answer(JUDGED, "4", judge=lambda m, t: ask(REASONER, t))
    # the echo model repeats the transcript's last character: a judgement without a grade
    assert text and len(set(text)) == 1
    assert grade is not None and (grade.grader, grade.value) == ("judge", None)
    assert grade.error and "no grade from 0 to 10" in grade.error and grade.reason == text.strip()


def test_judge_prompt_too_long_for_the_model_is_a_grade_error(echo_runtime: TinyRuntime) -> None:
    from magi.sweeps.bench import judge_asker
    from magi.testing.runtime import REASONER

    with echo_runtime.runner("development") as runner:  # n_ctx=256: the judge prompt does not fit
        grade = grade_answer(JUDGED, "4", judge=lambda m, t: judge_asker(runner.pool)(REASONER, t))
    assert grade.value is None and "n_ctx" in grade.error


# -- prompt sets: validation before anything runs --------------------------------------------
def test_number_without_expected_names_file_line_and_field(tmp_path: Path) -> None:
    path = _set(
        tmp_path, {"prompt": "ok", "grader": "number", "expected": 1}, {"prompt": "2+2?", "grader": "number"}
    )
    with pytest.raises(PromptSetError) as info:
        load_prompts(path)
    message = str(info.value)
    assert f"{path}:2:" in message and "'number'" in message and "'expected'" in message
    assert info.value.status_code == 422
    assert (info.value.details["line"], info.value.details["field"]) == (2, "expected")


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ({"prompt": "q", "grader": "regex"}, "pattern", "needs 'pattern'"),
        ({"prompt": "q", "grader": "regex", "pattern": "(unclosed"}, "pattern", "regular expression"),
        ({"prompt": "q", "grader": "python", "entry_point": "f"}, "test", "needs 'test'"),
        (
            {"prompt": "q", "grader": "python", "test": "pass", "entry_point": "no good"},
            "entry_point",
            "not a name",
        ),
        ({"prompt": "q", "grader": "choice"}, "expected", "needs 'expected'"),
        ({"prompt": "q", "grader": "choice", "expected": "Z"}, "expected", "letter A-E"),
        ({"prompt": "q", "grader": "number", "expected": "seven"}, "expected", "not one"),
        ({"prompt": "q", "grader": "exact"}, "expected", "needs 'expected'"),
        ({"prompt": "q", "grader": 3}, "grader", "must be a string"),
    ],
)
def test_a_grader_missing_or_unreadable_field_is_refused(
    tmp_path: Path, line: dict, field: str, words: str
) -> None:
    path = _set(tmp_path, line)
    with pytest.raises(PromptSetError) as info:
        load_prompts(path)
    assert f"{path}:1:" in str(info.value) and words in str(info.value)
    assert info.value.details["field"] == field


def test_unknown_grader_suggests_the_closest(tmp_path: Path) -> None:
    path = _set(tmp_path, {"prompt": "q", "grader": "numbr", "expected": "1"})
    with pytest.raises(PromptSetError) as info:
        load_prompts(path)
    assert f"{path}:1: unknown grader 'numbr'. Did you mean 'number'?" in str(info.value)
    assert all(name in str(info.value) for name in GRADERS)


@pytest.mark.parametrize("expected", [4, [4, 4.0], "4"])
def test_unknown_grader_with_a_numeric_expected_names_the_grader_not_expected(
    tmp_path: Path, expected: object
) -> None:
    # a typo of 'number' with a number in 'expected': the typo is the mistake, not the number
    path = _set(
        tmp_path,
        {"prompt": "Say 1", "expected": "1"},
        {"prompt": "2+2?", "grader": "numbr", "expected": expected},
    )
    with pytest.raises(PromptSetError) as info:
        load_prompts(path)
    message = str(info.value)
    assert f"{path}:2: unknown grader 'numbr'. Did you mean 'number'?" in message
    assert all(name in message for name in GRADERS) and "'expected' must be" not in message
    assert info.value.details["field"] == "grader"
    path = _set(tmp_path, {"prompt": "2+2?", "grader": 5, "expected": 4})
    with pytest.raises(PromptSetError, match=r"set\.jsonl:1: 'grader' must be a string, got int"):
        load_prompts(path)


def test_defaults_line_sets_the_grader_and_a_line_overrides_it(tmp_path: Path) -> None:
    path = _set(
        tmp_path,
        {"defaults": {"grader": "number", "timeout_s": 3}},
        {"prompt": "2+2?", "expected": 4},
        {"prompt": "Pick", "grader": "choice", "expected": "B"},
    )
    first, second = load_prompts(path)
    assert (first.grader_name, first.expected, first.timeout_s) == ("number", ("4",), 3.0)
    assert second.grader_name == "choice" and second.id == "3"


def test_defaults_line_is_checked(tmp_path: Path) -> None:
    with pytest.raises(
        PromptSetError, match=r":1: unknown field 'gradr' in defaults. Did you mean 'grader'\?"
    ):
        load_prompts(_set(tmp_path, {"defaults": {"gradr": "number"}}, {"prompt": "q"}))
    path = _set(tmp_path, {"defaults": {"grader": "number"}}, {"prompt": "no expected"})
    with pytest.raises(PromptSetError, match=r"set.jsonl:2: the 'number' grader needs 'expected'"):
        load_prompts(path)


def test_numbers_in_expected_only_with_the_number_grader(tmp_path: Path) -> None:
    assert load_prompts(_set(tmp_path, {"prompt": "q", "grader": "number", "expected": [3, 2.5]}))[
        0
    ].expected == (
        "3",
        "2.5",
    )
    with pytest.raises(PromptSetError, match="'expected' must be a string"):
        load_prompts(_set(tmp_path, {"prompt": "q", "expected": 3}))


def test_the_mixed_set() -> None:
    prompts = load_prompts(ROOT / "data" / "prompts" / "mixed.jsonl")
    graders = {p.grader_name for p in prompts}
    assert len(prompts) >= 40 and {"number", "choice"} <= graders
    assert len({p.id for p in prompts}) == len(prompts)
    assert sum(p.grader_name == "number" for p in prompts) >= 20
    assert sum(p.grader_name == "choice" for p in prompts) >= 20
    # each expected answer grades 1 when given as the answer
    for p in prompts:
        answer = p.expected[0] if p.expected else "2025-01-01"
        if p.grader_name == "choice":
            answer = f"The answer is {answer}."
        assert grade_answer(p, answer).value == 1.0, p.id


# -- HumanEval ---------------------------------------------------------------------------------
def test_humaneval_set_from_the_installed_package() -> None:
    prompts = load_prompts("humaneval")
    assert len(prompts) == 164 and prompts[0].id == "HumanEval/0"
    assert {p.grader_name for p in prompts} == {"python"}
    assert all(p.test and p.entry_point and p.code and p.code in p.prompt for p in prompts)
    assert len(load_prompts("humaneval", limit=3)) == 3


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail() -> None:
    for task in load_prompts("humaneval", limit=4):
        solution = f"```python\n{task.code}{task.reference}\n```"
        assert grade_answer(task, solution).value == 1.0, task.id
        assert grade_answer(task, task.reference or "").value == 1.0, task.id  # a bare completion
        wrong = grade_answer(task, f"def {task.entry_point}(*args):\n    return None\n")
        assert wrong.value == 0.0 and wrong.error, task.id


# -- the bench: grades and results.jsonl -------------------------------------------------------
BENCH_SET = [
    {"defaults": {"grader": "number", "timeout_s": 1}},
    {"id": "num", "prompt": "What is 2+2?", "expected": 4},
    {"id": "hit", "prompt": "Say hello", "grader": "contains", "expected": [":"]},  # echo answers ':'
    {"id": "mc", "prompt": "Pick one: A) x B) y", "grader": "choice", "expected": "B"},
    # the echo model's answer (":::") is no Python: the code opens a string that the test closes,
    # so the program compiles and its tests hang
    {
        "id": "hang",
        "prompt": "Write f",
        "grader": "python",
        "code": '_ = """',
        "test": '"""\nwhile True:\n    pass',
    },
    {
        "id": "crash",
        "prompt": "Write g",
        "grader": "python",
        "test": "def check(c):\n    c()",
        "entry_point": "g",
    },
    {"id": "judged", "prompt": "Explain 2+2", "grader": "judge", "rubric": "Says 4.", "expected": "4"},
    {"id": "plain", "prompt": "Hi there", "grader": None},  # null: not graded, whatever the default
]


def _bench(env: TinyRuntime, tmp_path: Path, lines: list[dict]) -> tuple[dict, Path]:
    from magi.sweeps.bench import run_bench
    from magi.sweeps.jobs import JobInfo

    path = _set(tmp_path, *lines, name="bench.jsonl")
    config = env.compose(
        "development", "task=bench", f"task.prompts='{path}'", "task.progress=false", "runtime.n_ctx=1024"
    )
    job = JobInfo(output_dir=tmp_path / "job", overrides=["profile=development"], profile_key="development")
    return run_bench(config, job), job.output_dir


def test_bench_writes_graded_results_beside_metrics(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    from magi.sweeps.bench import headline, read_results
    from magi.testing.runtime import REASONER

    metrics, folder = _bench(echo_runtime, tmp_path, BENCH_SET)
    assert (folder / "metrics.json").is_file() and metrics["results_file"] == "results.jsonl"
    rows = {r["id"]: r for r in read_results(folder)}
    assert list(rows) == ["num", "hit", "mc", "hang", "crash", "judged", "plain"]
    for row in rows.values():
        assert row["answer"] is not None and row["tier"] and row["model_id"] and row["models"]
        assert row["completion_tokens"] > 0 and row["total_s"] > 0 and row["error"] is None
    assert (rows["num"]["grader"], rows["num"]["grade"], rows["num"]["expected"]) == ("number", 0.0, ["4"])
    assert (rows["hit"]["grader"], rows["hit"]["grade"]) == ("contains", 1.0)
    assert rows["mc"]["grader"] == "choice" and rows["mc"]["grade"] == 0.0
    assert (rows["hang"]["grade"], rows["hang"]["grade_error"]) == (0.0, "timeout")
    assert (rows["crash"]["grade"], rows["crash"]["grade_error"]) == (0.0, "SyntaxError: invalid syntax")
    judged = rows["judged"]
    assert judged["grader"] == "judge" and judged["judge"] == REASONER  # the strong tier's first model
    assert judged["grade"] is None and "no grade" in judged["grade_error"]  # echo says no number
    assert (rows["plain"]["grade"], rows["plain"]["grader"]) == (None, None)
    grades = metrics["grades"]
    given = [r["grade"] for r in rows.values() if r["grade"] is not None]
    assert grades["graded"] == len(given) and grades["mean_grade"] == pytest.approx(sum(given) / len(given))
    assert grades["grade_errors"] == sum(1 for r in rows.values() if r["grade_error"] and r["grade"] is None)
    assert grades["by_grader"]["python"] == {"count": 2, "mean": 0.0}
    # the hit rate keeps its meaning beside the grades: 'expected' contained, of the 4 prompts with one
    assert (metrics["quality"]["checked"], metrics["quality"]["hit_rate"]) == (4, 0.25)
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["grades"] == grades
    assert f"mean grade {grades['mean_grade']:.2f}" in headline(metrics)


def test_bench_refuses_a_bad_set_before_any_prompt_runs(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    lines = [{"prompt": "ok", "expected": "x"}, {"prompt": "2+2?", "grader": "number"}]
    with pytest.raises(PromptSetError, match=r"bench.jsonl:2: the 'number' grader needs 'expected'"):
        _bench(echo_runtime, tmp_path, lines)
    saved = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert saved["status"] == "failed" and saved["answered"] == 0 and "bench.jsonl:2" in saved["error"]


def test_bench_refuses_an_unknown_judge_model(echo_runtime: TinyRuntime, tmp_path: Path) -> None:
    from magi.testing.runtime import REASONER

    wrong = REASONER[:-2]
    lines = [
        {"prompt": "ok", "expected": "x"},
        {"prompt": "q", "grader": "judge", "rubric": "r", "judge": wrong},
    ]
    with pytest.raises(
        PromptSetError, match=f"bench.jsonl:2: judge model '{wrong}'.*Did you mean '{REASONER}'"
    ):
        _bench(echo_runtime, tmp_path, lines)


@pytest.mark.parametrize("value", ["Infinity", "1e999", "NaN", "3601", "-1", "0", '"abc"', "true"])
def test_a_timeout_that_is_not_a_sane_number_of_seconds_is_a_line_error(tmp_path: Path, value: str) -> None:
    """Refused when the set is read, naming the file, line and the bound: an infinite or
    NaN timeout would pass and fail at grading (OverflowError)."""
    from magi.sweeps.prompts import MAX_TIMEOUT_S

    good = json.dumps({"prompt": "ok", "grader": "python", "test": "pass"})
    bad = '{"prompt": "q", "grader": "python", "test": "pass", "timeout_s": ' + value + "}"
    path = _set(tmp_path, good, bad)
    with pytest.raises(PromptSetError) as info:
        load_prompts(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: 'timeout_s' must be a number of seconds above 0 and at most ")
    assert f"{MAX_TIMEOUT_S:g}" in message and info.value.details["field"] == "timeout_s"
    bad = '{"defaults": {"grader": "python", "timeout_s": ' + value + '}}\n{"prompt": "q", "test": "pass"}'
    with pytest.raises(PromptSetError, match=r"set\.jsonl:2: 'timeout_s' must be"):
        load_prompts(_set(tmp_path, bad))


def test_a_timeout_at_the_bound_is_read(tmp_path: Path) -> None:
    from magi.sweeps.prompts import MAX_TIMEOUT_S

    path = _set(tmp_path, {"prompt": "q", "grader": "python", "test": "pass", "timeout_s": MAX_TIMEOUT_S})
    assert load_prompts(path)[0].timeout_s == MAX_TIMEOUT_S
