"""The distributions task parameters are drawn from, behind one declared protocol.

    goal = Uniform("goal_velocity", 0.0, 2.0)
    goal.sample(np.random.default_rng(0), 3)       # (3, 1) values, one column per name
    goal.outside({"goal_velocity": 2.5})          # why a task lies outside the training range
    DynamicsScale("body_mass", 8, 0.5, 2.0)       # scales a model field per task

A family holds a tuple of them (metarobot.families); the terrain is one too
(metarobot.terrain.Terrain). Every distribution answers the calls of TaskParameter; the
defaults of those that leave the model alone come from ParameterDefaults.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

import mujoco
import numpy as np


@runtime_checkable
class TaskParameter(Protocol):
    """What a family asks of a task-parameter distribution. name: the override that sets its
    range; names: the task parameters it draws, one column each."""

    name: str
    changes_model: bool  # whether apply writes into a task's model (dynamics, terrain)

    @property
    def names(self) -> Tuple[str, ...]: ...

    def validate(self) -> None:
        """ValueError when the distribution's own settings are unusable."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, len(names)) values drawn from rng."""

    def outside(self, values: Mapping[str, float]) -> Optional[str]:
        """Why a task's values lie outside the training range, or None."""

    def check_values(self, values: Mapping[str, float]) -> None:
        """ValueError when a task's values cannot be simulated at all."""

    def apply(self, model: mujoco.MjModel, values: Mapping[str, float]) -> None:
        """Writes a task's values into its own model (when changes_model)."""

    def with_range(self, value: Any) -> "TaskParameter":
        """A copy with the range an override gives."""

    def describe(self) -> str:
        """One line for the family table: what is drawn, from what."""

    def override(self) -> Tuple[str, Any]:
        """(what its override takes, the current range)."""

    def extremes(self) -> Tuple[float, ...]:
        """The extreme values it can draw (to check written model fields), or () if none."""


class ParameterDefaults:
    """TaskParameter's calls for a distribution that leaves the model alone and whose
    values need no check beyond being finite."""

    changes_model = False

    def check_values(self, values: Mapping[str, float]) -> None:
        return None

    def apply(self, model: mujoco.MjModel, values: Mapping[str, float]) -> None:
        return None

    def extremes(self) -> Tuple[float, ...]:
        return ()


def finite(x, what: str) -> float:
    """x as a float; ValueError naming what unless it is a finite number."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{what} should be a number, got {x!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} should be finite, got {x}")
    return x


@dataclasses.dataclass(frozen=True)
class Uniform(ParameterDefaults):
    """A parameter drawn uniformly from [low, high]."""

    name: str
    low: float
    high: float

    @property
    def names(self) -> Tuple[str, ...]:
        return (self.name,)

    def validate(self) -> None:
        low, high = finite(self.low, f"{self.name} low"), finite(self.high, f"{self.name} high")
        if not low <= high:
            raise ValueError(f"{self.name}: range [{low}, {high}] is empty (low > high)")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, 1))

    def outside(self, values: Mapping[str, float]) -> Optional[str]:
        """A description of the training range when the task's value lies outside it."""
        v = values[self.name]
        return None if self.low <= v <= self.high else \
            f"{self.name}={v:g} lies outside its training range [{self.low:g}, {self.high:g}]"

    def describe(self) -> str:
        return f"{self.name} ~ U[{self.low:g}, {self.high:g}]"

    def override(self) -> Tuple[str, Any]:
        return "(low, high) of a uniform task parameter", (self.low, self.high)

    def extremes(self) -> Tuple[float, ...]:
        return (float(self.low), float(self.high))

    def with_range(self, value) -> "Uniform":
        try:
            low, high = value
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} should be a (low, high) pair, got {value!r}") from None
        return dataclasses.replace(self, low=low, high=high)


@dataclasses.dataclass(frozen=True)
class Choice(ParameterDefaults):
    """A parameter drawn uniformly from a finite set of values."""

    name: str
    values: Tuple[float, ...]

    @property
    def names(self) -> Tuple[str, ...]:
        return (self.name,)

    def validate(self) -> None:
        if len(self.values) == 0:
            raise ValueError(f"{self.name}: the set of values is empty")
        for v in self.values:
            finite(v, f"{self.name} value")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.asarray(self.values, dtype=float)[rng.integers(len(self.values), size=n)][:, None]

    def outside(self, values: Mapping[str, float]) -> Optional[str]:
        v = values[self.name]
        return None if v in self.values else \
            f"{self.name}={v:g} is none of its training values {[float(x) for x in self.values]}"

    def describe(self) -> str:
        return f"{self.name} in {{{', '.join(f'{v:g}' for v in self.values)}}}"

    def override(self) -> Tuple[str, Any]:
        return "the values a task parameter is drawn from", list(self.values)

    def extremes(self) -> Tuple[float, ...]:
        return tuple(float(v) for v in self.values)

    def with_range(self, value) -> "Choice":
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{self.name} should be a sequence of values, got {value!r}")
        return dataclasses.replace(self, values=tuple(value))


@dataclasses.dataclass(frozen=True)
class Disc(ParameterDefaults):
    """A 2-D point drawn uniformly on a disc of the given radius around the origin."""

    x: str
    y: str
    radius: float

    @property
    def name(self) -> str:
        """The radius's override name: the coordinates' common prefix + 'radius'
        (goal_x, goal_y -> goal_radius)."""
        prefix = os.path.commonprefix([self.x, self.y])
        return f"{prefix}radius" if prefix else f"{self.x}_{self.y}_radius"

    @property
    def names(self) -> Tuple[str, ...]:
        return (self.x, self.y)

    def validate(self) -> None:
        r = finite(self.radius, f"{self.name}")
        if not r > 0:
            raise ValueError(f"{self.name} should be > 0, got {r}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # area-uniform: radius ~ R sqrt(U)
        r = self.radius * np.sqrt(rng.uniform(size=n))
        phi = rng.uniform(0.0, 2.0 * np.pi, size=n)
        return np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)

    def describe(self) -> str:
        return f"({self.x}, {self.y}) on a disc of radius {self.radius:g}"

    def override(self) -> Tuple[str, Any]:
        return f"radius of the disc ({self.x}, {self.y}) is drawn on", self.radius

    def with_range(self, value) -> "Disc":
        return dataclasses.replace(self, radius=value)

    def outside(self, values: Mapping[str, float]) -> Optional[str]:
        r = math.hypot(values[self.x], values[self.y])
        return None if r <= self.radius else \
            (f"({self.x}, {self.y})=({values[self.x]:g}, {values[self.y]:g}) lies {r:g} from the "
             f"origin, outside the training disc of radius {self.radius:g}")


# ---------------------------------------------------------------------------------- dynamics

DYNAMICS_FIELDS = ("body_mass", "body_inertia", "geom_friction", "dof_damping", "actuator_gear")


@dataclasses.dataclass(frozen=True)
class DynamicsScale(ParameterDefaults):
    """Per-task scale factors for every element of a model field, one task parameter each
    (named field[i], flat index): a factor u ~ U(low, high), or log_base ** u when log_base is
    set (the rand_param_envs scheme: body_mass with log_base 1.5, low -3, high 3)."""

    field: str
    size: int
    low: float
    high: float
    log_base: Optional[float] = None
    changes_model = True

    @property
    def name(self) -> str:
        return self.field

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(f"{self.field}[{i}]" for i in range(self.size))

    def validate(self) -> None:
        if self.field not in DYNAMICS_FIELDS:
            raise ValueError(f"dynamics field should be one of {DYNAMICS_FIELDS}, got "
                             f"{self.field!r}")
        low, high = finite(self.low, f"{self.field} low"), finite(self.high, f"{self.field} high")
        if not low <= high:
            raise ValueError(f"{self.field}: range [{low}, {high}] is empty (low > high)")
        if self.log_base is None:
            if low <= 0:
                raise ValueError(f"{self.field}: scale factors should be > 0 (a {self.field} "
                                 f"cannot change sign), got range [{low}, {high}]")
        elif not finite(self.log_base, f"{self.field} log_base") > 0:
            raise ValueError(f"{self.field}: log_base should be > 0, got {self.log_base}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, self.size))

    def factors(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return self.log_base ** values if self.log_base is not None else values

    def apply(self, model: mujoco.MjModel, values: Mapping[str, float]) -> None:
        """Scales model.field by the task's factors."""
        field = getattr(model, self.field)
        if field.size != self.size:
            raise ValueError(f"{self.field} has {field.size} elements, the family scales "
                             f"{self.size}")
        factors = self.factors([values[n] for n in self.names])
        field[...] = field * factors.reshape(field.shape)

    def outside(self, values: Mapping[str, float]) -> Optional[str]:
        bad = [n for n in self.names if not self.low <= values[n] <= self.high]
        if not bad:
            return None
        what = "exponents" if self.log_base is not None else "factors"
        return (f"{bad[0]}={values[bad[0]]:g} ({len(bad)} of the {self.field} {what}) lies "
                f"outside its training range [{self.low:g}, {self.high:g}]")

    def check_values(self, values: Mapping[str, float]) -> None:
        factors = self.factors(np.array([values[n] for n in self.names]))
        if not (np.isfinite(factors).all() and (factors > 0).all()):
            bad = factors[~(np.isfinite(factors) & (factors > 0))][0]
            raise ValueError(f"{self.field}: scale factors should be finite and > 0, got {bad}")

    def describe(self) -> str:
        factor = (f"{self.log_base:g}^U[{self.low:g}, {self.high:g}]" if self.log_base
                  else f"U[{self.low:g}, {self.high:g}]")
        return f"{self.field} x {factor} ({self.size} elements)"

    def override(self) -> Tuple[str, Any]:
        # dynamics scales are set together, under the family's 'dynamics' override
        return "under dynamics", (self.low, self.high)

    def with_range(self, value) -> "DynamicsScale":
        return dynamics_scale(self.field, value, self.size)


def dynamics_scale(field: str, value, size: int) -> DynamicsScale:
    """A DynamicsScale from an override: (low, high) factors, or a dict with log_base, low and
    high (factor log_base ** U(low, high))."""
    if isinstance(value, dict):
        unknown = set(value) - {"log_base", "low", "high"}
        if unknown or not {"low", "high"} <= set(value):
            raise ValueError(f"dynamics {field} takes {{'log_base', 'low', 'high'}}, got "
                             f"{sorted(value)}")
        scale = DynamicsScale(field, size, value["low"], value["high"], value.get("log_base"))
    else:
        try:
            low, high = value
        except (TypeError, ValueError):
            raise ValueError(f"dynamics {field} should be a (low, high) pair of scale factors "
                             f"or a dict with log_base, low, high; got {value!r}") from None
        scale = DynamicsScale(field, size, low, high)
    scale.validate()
    return scale


# ---------------------------------------------------------------------------------- actuators

# quantity -> (unit, lower bound, bound inclusive): what metarobot.terms.Actuators and the
# observation terms' noise read per task when a family draws them
ACTUATOR_QUANTITIES = {
    "kp": ("Nm/rad", 0.0, True),
    "kd": ("Nm s/rad", 0.0, True),
    "strength": ("factor on the PD torque", 0.0, True),
    "feedforward": ("Nm", -math.inf, True),
    "effort_limit": ("Nm", 0.0, False),
    "saturation_torque": ("Nm", 0.0, False),
    "max_velocity": ("rad/s", 0.0, False),
    "command_delay_ms": ("ms", 0.0, True),
    "noise_scale": ("factor on every observation term's noise", 0.0, True),
}
# quantities that may be drawn per motor
PER_MOTOR = ("kp", "kd", "strength", "feedforward", "effort_limit", "saturation_torque",
             "max_velocity")


@dataclasses.dataclass(frozen=True)
class ActuatorRange(ParameterDefaults):
    """A quantity of the actuator model drawn per task from U[low, high]: kp, kd, strength,
    feedforward, effort_limit, saturation_torque, max_velocity (one value for every motor, or
    with motors=n one per motor, named quantity[i]), command_delay_ms (the command delay of
    the task's episodes) or noise_scale (a factor on every observation term's noise). A task's
    value replaces the family's Actuators setting.

    >>> ActuatorRange("command_delay_ms", 0.0, 30.0)
    """

    quantity: str
    low: float
    high: float
    motors: Optional[int] = None

    @property
    def name(self) -> str:
        return self.quantity

    @property
    def names(self) -> Tuple[str, ...]:
        if self.motors is None:
            return (self.quantity,)
        return tuple(f"{self.quantity}[{i}]" for i in range(self.motors))

    def validate(self) -> None:
        if self.quantity not in ACTUATOR_QUANTITIES:
            raise ValueError(f"actuator quantity should be one of {sorted(ACTUATOR_QUANTITIES)}, "
                             f"got {self.quantity!r}")
        if self.motors is not None:
            if self.quantity not in PER_MOTOR:
                raise ValueError(f"{self.quantity} is one value per task, not per motor; drop "
                                 f"motors={self.motors!r}")
            if isinstance(self.motors, bool) or not isinstance(self.motors, int) or \
                    self.motors < 1:
                raise ValueError(f"{self.quantity}: motors should be an integer >= 1 or None, "
                                 f"got {self.motors!r}")
        low = finite(self.low, f"{self.quantity} low")
        high = finite(self.high, f"{self.quantity} high")
        if not low <= high:
            raise ValueError(f"{self.quantity}: range [{low}, {high}] is empty (low > high)")
        self._check(low)

    def _check(self, value: float) -> None:
        unit, bound, inclusive = ACTUATOR_QUANTITIES[self.quantity]
        if not (value >= bound if inclusive else value > bound):
            raise ValueError(f"{self.quantity} ({unit}) should be {'>=' if inclusive else '>'} "
                             f"{bound:g}, got {value:g}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, len(self.names)))

    def outside(self, values: Mapping[str, float]) -> Optional[str]:
        bad = [n for n in self.names if not self.low <= values[n] <= self.high]
        if not bad:
            return None
        return (f"{bad[0]}={values[bad[0]]:g} lies outside its training range "
                f"[{self.low:g}, {self.high:g}]")

    def check_values(self, values: Mapping[str, float]) -> None:
        for n in self.names:
            self._check(values[n])

    def describe(self) -> str:
        each = "" if self.motors is None else f" per motor ({self.motors})"
        return f"{self.quantity} ~ U[{self.low:g}, {self.high:g}]{each}"

    def override(self) -> Tuple[str, Any]:
        unit = ACTUATOR_QUANTITIES[self.quantity][0]
        return f"(low, high) of the actuators' {self.quantity} ({unit}) per task", \
            (self.low, self.high)

    def with_range(self, value) -> "ActuatorRange":
        try:
            low, high = value
        except (TypeError, ValueError):
            raise ValueError(f"{self.quantity} should be a (low, high) pair, got "
                             f"{value!r}") from None
        return dataclasses.replace(self, low=low, high=high)
