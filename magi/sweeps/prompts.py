"""Prompt sets for benchmarks and calibration: find the file, read it, say what is wrong.

Two formats:

* ``.jsonl`` - one JSON object per line with a string ``prompt`` and optionally
  ``id``, ``label`` (``easy``/``hard``) and ``expected`` (strings of which an answer
  should contain one; the bench reports the hit rate);
* ``.txt`` - one prompt per line.

Relative paths are tried from the working directory first, then from the project
root, so ``task.prompts=data/prompts/holdout.jsonl`` works from any folder and from
launchers whose jobs start elsewhere (SLURM, Ray).

Example:
    >>> from magi.sweeps.prompts import load_prompts
    >>> items = load_prompts("data/prompts/bench.jsonl", limit=2)
    >>> [p.id for p in items]
    ['capital', 'arith']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from magi.errors import MAGIException

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FORMATS = (".jsonl", ".txt")


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


def _parse_jsonl_line(path: Path, number: int, line: str) -> Prompt:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise PromptSetError(
            f"{path}:{number}: expected a JSON object with a 'prompt', got {type(data).__name__}"
        )
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptSetError(f"{path}:{number}: 'prompt' must be a non-empty string")
    expected = data.get("expected") or []
    if isinstance(expected, str):
        expected = [expected]
    if not isinstance(expected, list) or not all(isinstance(e, str) for e in expected):
        raise PromptSetError(f"{path}:{number}: 'expected' must be a string or a list of strings")
    label = data.get("label")
    return Prompt(
        prompt=prompt,
        id=str(data.get("id", number)),
        label=str(label) if label is not None else None,
        expected=tuple(expected),
    )


def load_prompts(
    path: str | Path, *, limit: int | None = None, setting: str = "task.prompts"
) -> list[Prompt]:
    """Read a prompt set (see the module docstring), keeping the first ``limit`` prompts.

    Raises:
        PromptSetError: the file is missing, of an unknown format, malformed (file and
            line named) or holds no prompt.
    """
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
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if file.suffix == ".jsonl":
            items.append(_parse_jsonl_line(file, number, line))
        else:
            items.append(Prompt(prompt=line.strip(), id=str(number)))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise PromptSetError(f"{file}: the prompt file holds no prompt (fix {setting})")
    return items
