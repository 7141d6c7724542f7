"""Progress on every long step (embedding prompts, calibrating, training, evaluating), on stderr only.

On a terminal: a Rich bar with counts, elapsed time and ETA, shown once a step has run for
:data:`TTY_AFTER_S` (quick steps show nothing). Elsewhere (a pipe, a log file, CI): one line every
``$CATIMG_PROGRESS_EVERY`` seconds (default :data:`LINE_EVERY_S`; ``0``: on every update), such as
``embedding prompts: 1,024/10,000 (10%), 12.5 s elapsed, about 1.8 min left``, and a last line when a step
that printed one ends. stdout is never written, so ``--json`` output stays one document. ``CATIMG_PROGRESS=0``
turns progress off.

The core reports through plain callbacks (``on_progress(done, total)`` of
:class:`catimg.routing.encoder.PromptEncoder`, ``on_event`` of
:func:`catimg.calibration.calibrate.run_campaign`, ``progress(message)`` of
:func:`catimg.training.train.train_router`); this module turns them into output.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LINE_EVERY_S = 10.0
TTY_AFTER_S = 1.0


def _enabled() -> bool:
    return os.environ.get("CATIMG_PROGRESS", "1") not in ("0", "off", "no")


def _line_every() -> float:
    try:
        return max(0.0, float(os.environ.get("CATIMG_PROGRESS_EVERY", LINE_EVERY_S)))
    except ValueError:
        return LINE_EVERY_S


class StepProgress:
    """Progress of one counted step (``total`` items) on stderr: a Rich bar on a terminal, periodic lines off
    it."""

    def __init__(self, label: str, total: int, tty: bool | None = None) -> None:
        self.label, self.total, self.done = label, max(0, int(total)), 0
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.enabled = _enabled() and self.total > 0
        self.every = _line_every()
        self.t0 = time.perf_counter()
        self._last_line: float | None = None
        self._bar: Any = None
        self._task: Any = None

    # -- reporting -------------------------------------------------------------------------------------
    def update(self, done: int, total: int | None = None, label: str | None = None) -> None:
        if total is not None:
            self.total = max(0, int(total))
        if label is not None:
            self.label = label
        self.done = min(int(done), self.total) if self.total else int(done)
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            self._draw_bar(now)
        elif (
            self._last_line is None
            and now - self.t0 >= self.every
            or (self._last_line is not None and now - self._last_line >= self.every)
        ):
            self._line(now)

    def advance(self, n: int = 1, label: str | None = None) -> None:
        self.update(self.done + n, label=label)

    def note(self, message: str) -> None:
        """A line of its own on stderr (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.console.print(message, highlight=False, markup=False)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.enabled and not self.tty and self._last_line is not None:
            from catimg.durations import format_duration

            print(
                f"{self.label}: {self.done:,}/{self.total:,} done in "
                f"{format_duration(time.perf_counter() - self.t0)}",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- output ----------------------------------------------------------------------------------------
    def _line(self, now: float) -> None:
        from catimg.durations import format_duration

        elapsed = now - self.t0
        text = f"{self.label}: {self.done:,}/{self.total:,}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {format_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", about {format_duration(elapsed / self.done * (self.total - self.done))} left"
        print(text, file=sys.stderr, flush=True)
        self._last_line = now

    def _draw_bar(self, now: float) -> None:
        if self._bar is None:
            if now - self.t0 < TTY_AFTER_S:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        self._bar.update(self._task, completed=self.done, total=self.total, description=self.label)


@contextmanager
def embedding_progress(label: str = "embedding prompts") -> Iterator[None]:
    """While the block runs, the default prompt encoder reports the prompts it embeds (those not cached)."""
    from catimg.routing.encoder import default_encoder

    enc = default_encoder()
    current: list[StepProgress] = []

    def on_progress(done: int, total: int) -> None:
        if not current:
            current.append(StepProgress(label, total))
        current[0].update(done, total)
        if done >= total:
            current.pop().close()

    saved = enc.on_progress
    enc.on_progress = on_progress
    try:
        yield
    finally:
        enc.on_progress = saved
        for step in current:
            step.close()


def stage_lines(quiet: bool) -> Any:
    """``say(message)``: one line per stage of a long command on stderr, with the seconds since the start (off
    when ``quiet``: --json-only runs keep stdout clean anyway, and small runs take seconds)."""
    t0 = time.perf_counter()

    def say(message: str) -> None:
        if not quiet and _enabled():
            print(f"[{time.perf_counter() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say
