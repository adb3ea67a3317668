"""Task ``run``: answer ``prompt`` (or a few built-in prompts) and show the routing.

python run.py                                   # built-in prompts, default profile
python run.py profile=demo prompt="Why is the sky blue?"
python run.py profile=demo task.messages=chat.json   # a conversation from a JSON file

A ``task.messages`` file is read and checked (:func:`magi.conversation.load_messages`)
before any model loads: a bad one exits 2 naming the file and the message's index.

Every prompt is tried, even after one failed: the table then marks the failed rows
(``FAILED [1]``) and lists each one's cause under it, each model's own error. A run
whose prompts partly failed exits 1 after the table (as ``task=bench`` does); one that
answered nothing exits 2 with the error, as any other failed run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from magi.config.app import MagiConfig
from magi.config.task import RunTaskConfig
from magi.conversation import Conversation, load_messages
from magi.errors import EXIT_PARTIAL, ConfigError, MAGIException
from magi.render import StreamPrinter, table
from magi.runtime.runner import Runner
from magi.runtime.trace import RunResult
from magi.tasks.registry import register_task

#: Prompts of rising difficulty, so one run shows every tier at work.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Name three primary colors.",
    "Explain step by step why the sum of two odd numbers is always even, and prove it.",
    "Compare merge sort and quicksort: analyse their time complexity, memory use and "
    "stability, and explain when you would choose each.",
)


def request_line(request: str | Conversation) -> str:
    """How an answer's request is echoed before it (``>>> prompt``): a conversation's
    last user message, after how many messages came with it."""
    if isinstance(request, str) or request.is_single_prompt:
        return f">>> {request if isinstance(request, str) else request.last_user}"
    return f">>> [{len(request.messages)} messages] {request.last_user}"


def print_stream(runner: Runner, request: str | Conversation, out: TextIO | None = None) -> RunResult:
    """Stream one answer to ``out`` (default: the current ``sys.stdout``, looked up per
    call so ``redirect_stdout`` and notebook capture see it) with each stage marked
    (:class:`magi.render.StreamPrinter`); return its result.

    Raises the errors of :meth:`Runner.stream` after marking the answer
    ``[FAILED: <headline>]``, so the output never ends in a silent half answer.
    """
    out = out if out is not None else sys.stdout
    printer = StreamPrinter(out)
    out.write(f"\n{request_line(request)}\n")
    stream = runner.stream(request)
    try:
        for event in stream:
            printer.event(event)
    except MAGIException as exc:
        printer.fail(exc)
        raise
    assert stream.result is not None
    return stream.result


@dataclass(frozen=True)
class PromptAnswer:
    """One prompt of a run: its result, or the error no model got past.

    ``score`` and ``routed_tier`` are the router's for a failed prompt too (scoring
    alone, so no balancer turn is used up), so its table row says where it went.
    """

    prompt: str
    result: RunResult | None = None
    error: MAGIException | None = None
    score: float | None = None
    routed_tier: str | None = None

    @property
    def cause(self) -> str:
        """Why it failed, on one line: each model's own error in this request
        (``NoModelAnsweredError.details["errors"]``), else the error's headline."""
        if self.error is None:
            return ""
        from magi.sweeps.metrics import failure_cause, prompt_failure
        from magi.sweeps.prompts import Prompt

        return failure_cause(prompt_failure(Prompt(self.prompt), self.error))

    def to_dict(self) -> dict[str, Any]:
        """The result's :meth:`RunResult.to_dict`, or the failure's record (as a bench's
        ``errors.prompts`` entry: error type, status, headline, each model's cause)."""
        if self.result is not None:
            return self.result.to_dict()
        from magi.sweeps.metrics import prompt_failure
        from magi.sweeps.prompts import Prompt

        assert self.error is not None
        record = prompt_failure(Prompt(self.prompt), self.error, routed_tier=self.routed_tier)
        record.pop("id", None)
        record.pop("expected", None)
        return {**record, "prompt": self.prompt, "score": self.score}


def answer_prompts(
    runner: Runner, prompts: Iterable[str | Conversation], out: TextIO | None = None
) -> list[PromptAnswer]:
    """Stream every prompt's (or conversation's) answer (:func:`print_stream`); one no
    model could answer is kept, with its error, and the next one runs.

    A :class:`ConfigError` is raised at once: the configuration is wrong, so every
    prompt would fail the same way. Errors that are not :class:`MAGIException`s
    (bugs) are raised too.
    """
    answers = []
    for request in prompts:
        prompt = request if isinstance(request, str) else request.last_user
        try:
            answers.append(PromptAnswer(prompt, result=print_stream(runner, request, out)))
        except ConfigError:
            raise
        except MAGIException as exc:
            score, tier = _route_only(runner, request)
            answers.append(PromptAnswer(prompt, error=exc, score=score, routed_tier=tier))
    return answers


def _route_only(runner: Runner, request: str | Conversation) -> tuple[float | None, str | None]:
    """Score and tier of ``request`` without a balancer turn; ``None``s if scoring fails."""
    from magi.routing.router import conversation_score

    try:
        if isinstance(request, str):
            score = runner.router.scorer.score(request).score
        else:
            score = conversation_score(runner.router.scorer, request).score
        return score, runner.router.tier_for(score)
    except Exception:  # noqa: BLE001 - describing a failure must not fail
        return None, None


def tier_label(result: RunResult) -> str:
    """``fast``; ``fast→powerful`` when the routed tier failed and another answered."""
    if result.tier == result.routed_tier:
        return result.routed_tier
    return f"{result.routed_tier}→{result.tier}"


def _short(prompt: str) -> str:
    return (prompt[:40] + "…") if len(prompt) > 41 else prompt


def runs_on(result: RunResult) -> str:
    """Where a result's stages ran ("CPU", "GPU 24/24 layers", "server"), once when all
    stages ran alike, else per stage ("CPU → GPU 40/40 layers")."""
    places = [s.placement or "-" for s in result.stages]
    return places[0] if len(set(places)) == 1 else " → ".join(places)


def routing_table(answers: Sequence[RunResult | PromptAnswer]) -> str:
    """One row per prompt: score, tier, model(s), tokens, how each stage ended, timings,
    and where the models ran (:func:`runs_on`).

    "ended" is each stage's finish reason: ``stop`` and ``length`` as usual, or why the
    answer was cut short and kept (``repetition``, ``timeout``, ``stalled``, ``cancelled``).

    The tier reads ``fast→powerful`` after a fallback to another tier. A failed
    prompt's row says ``FAILED [n]`` in the model column, and note ``[n]`` under the
    table gives its cause.
    """
    rows = []
    notes = []
    for item in answers:
        r = item.result if isinstance(item, PromptAnswer) else item
        if r is None:
            assert isinstance(item, PromptAnswer)
            notes.append(f"[{len(notes) + 1}] {_short(item.prompt)}: {item.cause}")
            rows.append(
                (
                    _short(item.prompt),
                    "-" if item.score is None else f"{item.score:.1f}",
                    item.routed_tier or "-",
                    f"FAILED [{len(notes)}]",
                    *("-" * 8),
                )
            )
            continue
        rows.append(
            (
                _short(r.prompt),
                f"{r.score:.1f}",
                tier_label(r) + (" (2-stage)" if r.two_stage else ""),
                " → ".join(s.model_id for s in r.stages),
                r.completion_tokens,
                " → ".join(s.finish_reason for s in r.stages),
                f"{r.ttft_s * 1000:.0f} ms",
                f"{r.total_s:.2f} s",
                f"{r.wait_s:.2f} s",
                f"{r.decode_tokens_per_s:.1f}",
                len(r.fallbacks),
                runs_on(r),
            )
        )
    text = table(
        (
            "prompt",
            "score",
            "tier",
            "model",
            "tokens",
            "ended",
            "first token",
            "total",
            "load/wait",
            "tok/s",
            "fallbacks",
            "runs on",
        ),
        rows,
    )
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def exit_status(answers: Sequence[PromptAnswer]) -> int:
    """0 when every prompt was answered; else print one ``error:`` line on stderr and
    return :data:`EXIT_PARTIAL`.

    Raises:
        MAGIException: no prompt was answered (the prompt's own error when there was
            one; with several, one naming the first cause), so the caller reports it
            as any failed run: exit 2 from ``run.py`` and ``magi``, a failed job in a sweep.
    """
    failed = [a for a in answers if a.error is not None]
    if not failed:
        return 0
    first = f"{_short(failed[0].prompt)}: {failed[0].cause}"
    if len(failed) == len(answers):
        if len(failed) == 1:
            assert failed[0].error is not None
            raise failed[0].error
        raise MAGIException(
            f"No prompt could be answered ({len(failed)} of {len(answers)} failed): {first}",
            status_code=failed[0].error.status_code if failed[0].error else None,
            details={"errors": {a.prompt: a.cause for a in failed}},
        )
    print(f"error: {len(failed)} of {len(answers)} prompts failed: {first}", file=sys.stderr)
    return EXIT_PARTIAL


def messages_path(path: Path) -> Path:
    """``task.messages`` as given when it exists (or is absolute), else from the project root."""
    from magi.sweeps.prompts import PROJECT_ROOT

    given = path.expanduser()
    if given.is_absolute() or given.exists() or not (PROJECT_ROOT / given).exists():
        return given  # a missing file is load_messages' error, naming the path as given
    return PROJECT_ROOT / given


@register_task("run")
def run_task(config: MagiConfig) -> list[dict[str, object]]:
    """Answer the prompt(s), print each answer as it streams and a routing table.

    A failed prompt does not stop the others (see the module docstring); after the
    table a single run exits :data:`EXIT_PARTIAL` if some failed. In a sweep the job
    returns instead, so the other jobs and the summary still run.
    """
    from magi.runtime.pool import shared_pool
    from magi.sweeps.jobs import current_job

    requests: list[str | Conversation] = [config.prompt] if config.prompt else []
    settings = config.task if isinstance(config.task, RunTaskConfig) else RunTaskConfig()
    if settings.messages is not None:  # read and checked before any model loads
        requests.append(load_messages(messages_path(settings.messages)))
    with Runner(config, pool=shared_pool()) as runner:
        answers = answer_prompts(runner, requests or BUILTIN_PROMPTS)
    print()
    print(routing_table(answers), flush=True)
    status = exit_status(answers)
    if status and not current_job().multirun:
        sys.exit(status)
    return [a.to_dict() for a in answers]
