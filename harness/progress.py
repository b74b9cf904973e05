"""Progress a user can see: a rich bar at a terminal; plain lines where stderr is a file or a pipe (CI, Slurm,
`2> log`), at least every INTERVAL seconds and when a run ends; nothing with HARNESS_NO_PROGRESS=1."""

from __future__ import annotations

import os
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

INTERVAL = 30.0  # seconds between plain progress lines


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """The part of rich's Progress that the runs use (one job: add_task, update, advance), written as lines:
    `[progress] <description>: <done>/<total> <unit>, elapsed H:MM:SS, eta H:MM:SS`."""

    def __init__(self, console: Console, unit: str, interval: float = INTERVAL):
        self.console, self.unit, self.interval = console, unit, interval
        self.description, self.total, self.done = "", 0.0, 0.0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> PlainProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.line()

    def add_task(self, description: str, total: float) -> int:
        with self._lock:
            self.description, self.total, self.done = description, float(total), 0.0
        return 0

    def update(self, job: int, description: str | None = None) -> None:
        with self._lock:
            if description is not None:
                self.description = description

    def advance(self, job: int, n: float = 1) -> None:
        with self._lock:
            self.done += n

    def line(self) -> None:
        with self._lock:
            elapsed = time.monotonic() - self.started
            # the total is an estimate (a unit's steps are counted before it runs): the eta never goes below 0
            eta = elapsed / self.done * max(0.0, self.total - self.done) if self.done else None
            text = (
                f"[progress] {self.description}: {self.done:.0f}/{self.total:.0f} {self.unit}, "
                f"elapsed {_clock(elapsed)}, eta {_clock(eta) if eta is not None else '–'}"
            )
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.line()


def progress(console: Console, unit: str, plain: bool = False):
    """The progress display for one run over `unit`s (steps, units): see the module's docstring. `plain`: lines
    even at a terminal (the processes of one job share it, and their bars would overwrite each other)."""
    disabled = os.environ.get("HARNESS_NO_PROGRESS") == "1"
    if not disabled and (plain or not console.is_terminal):
        return PlainProgress(console, unit)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit)]
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=False, disable=disabled)
