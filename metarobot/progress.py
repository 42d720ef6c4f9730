"""Progress of a training run on stderr: a self-rewriting line on a terminal, plain lines in a
log, with each phase of an iteration as it starts and an ETA."""

from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    """Progress on stderr: one self-rewriting line on a terminal, plain lines otherwise. The
    phases of the first iteration are shown as they start (it is the slowest: nothing is warm
    yet); on a terminal every iteration's are. The ETA counts the iterations after the
    first only."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.start, self.enabled = total, start, enabled
        self.tty = sys.stderr.isatty()
        self.done = start
        self.first_end: Optional[float] = None  # when this process's first iteration ended
        self.first_time = 0.0
        self.t0 = time.perf_counter()
        self.last = ""

    def _bar(self) -> str:
        width = 24
        filled = int(width * self.done / self.total)
        return "[" + "#" * filled + "." * (width - filled) + f"] {self.done}/{self.total}"

    def _write(self, line: str) -> None:
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def phase(self, text: str) -> None:
        """The phase of the iteration under way has changed."""
        if not self.enabled or (not self.tty and self.done > self.start):
            return
        self._write(f"{self._bar()} | iteration {self.done + 1}: {text}"
                    + (f" | {self.last}" if self.last and self.tty else ""))

    def update(self, done: int, text: str) -> None:
        now = time.perf_counter()
        if self.first_end is None:
            self.first_end, self.first_time = now, now - self.t0
        self.done = done
        if not self.enabled:
            return
        later = done - self.start - 1  # iterations after this process's first
        if later >= 1:
            rate = (now - self.first_end) / later
            eta = f"{rate:.1f} s/it | ETA {rate * (self.total - done) / 60:.1f} min"
        else:
            rate = self.first_time
            eta = f"first iteration {rate:.1f} s | ETA after the next"
        self.last = f"{text} | {eta}"
        self._write(f"{self._bar()} | {self.last}")

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
