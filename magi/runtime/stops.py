"""The repetition stop: end an answer that has fallen into a loop.

Small models, greedy sampling above all, fall into loops: the bench set's "What is 12
times 12?" makes Gemma 3 270M write ``144000000…`` until ``max_tokens``. Such an answer
is not a failure (its beginning is the answer), it is just over. The runner ends it
when its last ``window`` tokens are one short cycle (at most ``max_cycle`` tokens)
repeated, and keeps the text with ``finish_reason`` "repetition".

With the defaults (``runtime.repetition_window=32``, ``runtime.repetition_max_cycle=8``)
that is one token 32 times in a row, or a cycle of up to 8 tokens at least 4 times in
a row; prose, code and lists practically never do that, while a loop is caught within
32 tokens of starting. ``runtime.repetition_stop=false`` turns it off.

Example:
    >>> stop = RepetitionStop(window=8, max_cycle=2)
    >>> stop.repeating([" 1", "4", "4"] + ["0"] * 7), stop.repeating([" 1", "4", "4"] + ["0"] * 8)
    (False, True)
    >>> stop.repeating(["ab", "cd"] * 4), stop.repeating(list("abcdefgh"))
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RepetitionStop:
    """Detects an answer whose last ``window`` tokens repeat a cycle of ``max_cycle`` or fewer."""

    window: int = 32
    max_cycle: int = 8

    def __post_init__(self) -> None:
        if self.max_cycle < 1 or self.window < 2 * self.max_cycle:
            raise ValueError(
                f"repetition stop: window ({self.window}) must hold the longest cycle "
                f"({self.max_cycle}) at least twice"
            )

    def repeating(self, pieces: Sequence[str]) -> bool:
        """Whether the last ``window`` pieces (one per token) are a repeated short cycle.

        Called after every token, so it looks only at the tail: ``window`` x
        ``max_cycle`` string comparisons at most.
        """
        if len(pieces) < self.window:
            return False
        tail = pieces[-self.window :]
        return any(
            all(tail[i] == tail[i - cycle] for i in range(cycle, self.window))
            for cycle in range(1, self.max_cycle + 1)
        )
