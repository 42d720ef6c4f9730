"""What a numeric setting may hold, written once for the Python API and the command line.

    STEPS = Range(int, low=0)
    STEPS.check(steps, "steps")          # ValueError: steps should be an integer >= 0, got -1
    parser.add_argument("--steps", type=STEPS.parse)   # argparse names the flag

Values outside what a setting means are refused before any work, naming the setting, what
was expected and what came.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from typing import Any, Optional, Union

SEED_MAX = 2 ** 64 - 1  # seeds are unsigned 64-bit integers in the C++ core


@dataclasses.dataclass(frozen=True)
class Range:
    """Integers (kind int) or finite numbers (kind float) in [low, high]; (low, high] when
    open_low."""

    kind: type
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        low, high = (self._text(x) for x in (self.low, self.high))
        if self.low == -math.inf and self.high == math.inf:
            return noun
        if self.high == math.inf:
            return f"{noun} {'>' if self.open_low else '>='} {low}"
        if self.low == -math.inf:
            return f"{noun} <= {high}"
        return f"{noun} in {'(' if self.open_low else '['}{low}, {high}]"

    def _text(self, bound: float) -> str:
        return str(int(bound)) if self.kind is int and math.isfinite(bound) else f"{bound:g}"

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        return above and value <= self.high

    def check(self, value: Any, name: str) -> Union[int, float]:
        """value as an int or float; ValueError naming name when it is outside the range."""
        if not self.holds(value):
            raise ValueError(f"{name} should be {self.describe()}, got {value!r}")
        return int(value) if self.kind is int else float(value)

    def parse(self, text: str) -> Union[int, float]:
        """An argparse type: the flag's text as a value in the range."""
        try:
            value: Any = int(text) if self.kind is int else float(text)
        except ValueError:
            value = None
        if value is None or not self.holds(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value


def optional(range_: Range, value: Any, name: str) -> Optional[Union[int, float]]:
    """None, or value checked against range_."""
    return None if value is None else range_.check(value, name)


COUNT = Range(int, low=1)             # tasks, trajectories, iterations, simulations
NONNEGATIVE_INT = Range(int, low=0)   # adaptation steps, threads (0: one per CPU)
SEED = Range(int, low=0, high=SEED_MAX)
STEP_SIZE = Range(float, low=0.0)     # adaptation step sizes; 0 is the no-adaptation control
POSITIVE = Range(float, low=0.0, open_low=True)
