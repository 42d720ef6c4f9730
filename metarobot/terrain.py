"""Heightfield terrains for locomotion families: rough ground, slopes, stairs and waves, each with
a difficulty in [0, 1] and a seed per task.

    heights = metarobot.terrain.generate("stairs", difficulty=0.5, seed=3,
                                         shape=(5, 321), half_size=(8.0, 0.5))

A terrain is a (rows, columns) array of heights in metres on a regular grid: row r lies at
y = -half_y + 2 half_y r / (rows - 1), column c at x = -half_x + 2 half_x c / (columns - 1),
as MuJoCo lays out hfield_data. Every terrain is flat (height 0) within spawn_radius of the
origin, where robots start, and blends into its relief over the next blend metres.

The ``Terrain`` task distribution draws (kind, difficulty, seed) per task and writes the
generated heights into the model's heightfield, so tasks on different terrains share one batch
(the heightfield's size is the model's; only its data differ).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import mujoco
import numpy as np

KINDS = ("flat", "rough", "slopes", "stairs", "waves")

# relief at difficulty 1 (0 gives the gentlest version of each kind)
ROUGH_AMPLITUDE = (0.01, 0.08)      # m, half the peak-to-peak noise
SLOPE_ANGLE = (3.0, 20.0)           # degrees
STAIR_HEIGHT = (0.02, 0.12)         # m per step
WAVE_AMPLITUDE = (0.02, 0.15)       # m


def _lerp(pair: Tuple[float, float], t: float) -> float:
    return pair[0] + (pair[1] - pair[0]) * t


def _profile_x(x: np.ndarray, kind: str, t: float, rng: np.random.Generator) -> np.ndarray:
    """Heights along x (1-D relief, the same across y) for slopes and stairs, m."""
    if kind == "slopes":
        # piecewise-linear hills: segments 1-2.5 m long with grades +-tan(angle), walked out
        # from the origin on each side; the grade turns around at +-0.4 m
        grade = np.tan(np.radians(_lerp(SLOPE_ANGLE, t)))
        h = np.zeros_like(x)
        for side in (x >= 0, x < 0):
            idx = np.flatnonzero(side)
            idx = idx[np.argsort(np.abs(x[idx]))]
            prev, height = 0.0, 0.0
            slope, seg_end = grade * rng.choice((-1.0, 1.0)), rng.uniform(1.0, 2.5)
            for k in idx:
                d = abs(x[k])
                height += slope * (d - prev)
                prev = d
                if abs(height) > 0.4:
                    height, slope = float(np.clip(height, -0.4, 0.4)), -slope
                if d > seg_end:
                    slope, seg_end = grade * rng.choice((-1.0, 1.0)), d + rng.uniform(1.0, 2.5)
                h[k] = height
        return h
    if kind == "stairs":
        # staircases up then down (pyramids) with treads of 0.3-0.6 m
        step = _lerp(STAIR_HEIGHT, t)
        h = np.zeros_like(x)
        for sign in (1.0, -1.0):
            mask = (x * sign) >= 0
            xs = x[mask] * sign
            edges = np.cumsum(rng.uniform(0.3, 0.6, size=int(np.max(xs, initial=0) / 0.3) + 2))
            level = np.searchsorted(edges, xs, side="right")
            # 3-5 steps per flight, at most 0.45 m high in all
            flights = min(int(rng.integers(3, 6)), int(0.45 / step))
            # triangle wave of levels: up flights steps, down flights steps, ...
            phase = level % (2 * flights)
            h[mask] = step * np.where(phase <= flights, phase, 2 * flights - phase)
        return h
    raise ValueError(kind)


def generate(kind: str, difficulty: float, seed: int, shape: Tuple[int, int],
             half_size: Tuple[float, float], spawn_radius: float = 1.0,
             blend: float = 0.5) -> np.ndarray:
    """Heights (rows, columns) in metres of one terrain.

    Args:
      kind: one of KINDS.
      difficulty: in [0, 1]; scales the relief (noise amplitude, slope angle, step height, wave
        amplitude; see the constants of this module).
      seed: the terrain's random layout.
      shape: (rows, columns) of the grid, rows along y.
      half_size: (half_x, half_y), m: the grid spans [-half_x, half_x] x [-half_y, half_y].
      spawn_radius: heights are 0 within this distance of the origin, m.
      blend: metres over which the relief fades in beyond spawn_radius.
    """
    if kind not in KINDS:
        raise ValueError(f"terrain kind should be one of {KINDS}, got {kind!r}")
    if not (np.isfinite(difficulty) and 0.0 <= difficulty <= 1.0):
        raise ValueError(f"terrain difficulty should be in [0, 1], got {difficulty}")
    rows, cols = shape
    if rows < 2 or cols < 2:
        raise ValueError(f"terrain shape should be at least (2, 2), got {shape}")
    rng = np.random.default_rng(int(seed))
    x = np.linspace(-half_size[0], half_size[0], cols)
    y = np.linspace(-half_size[1], half_size[1], rows)
    xx, yy = np.meshgrid(x, y)
    t = float(difficulty)
    if kind == "flat":
        h = np.zeros((rows, cols))
    elif kind == "rough":
        a = _lerp(ROUGH_AMPLITUDE, t)
        noise = rng.uniform(-a, a, size=(rows + 2, cols + 2))
        # a 3x3 box filter keeps the ground walkable (no single-cell spikes), then rescale to
        # the amplitude
        h = sum(noise[i:i + rows, j:j + cols] for i in range(3) for j in range(3)) / 9.0
        peak = np.max(np.abs(h))
        h = h * (a / peak) if peak > 0 else h
    elif kind in ("slopes", "stairs"):
        h = np.broadcast_to(_profile_x(x, kind, t, rng), (rows, cols)).copy()
    else:  # waves
        a = _lerp(WAVE_AMPLITUDE, t)
        lx, ly = rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.0)
        px, py = rng.uniform(0, 2 * np.pi, size=2)
        h = 0.5 * a * (np.sin(2 * np.pi * xx / lx + px) + np.sin(2 * np.pi * yy / ly + py))
    # flat spawn area around the origin; the relief fades in over blend metres
    r = np.hypot(xx, yy)
    weight = np.clip((r - spawn_radius) / blend, 0.0, 1.0) if blend > 0 else (r > spawn_radius)
    return h * weight


@dataclasses.dataclass(frozen=True)
class Terrain:
    """Task parameters of a terrain: its kind (an index into KINDS, drawn uniformly from
    kinds), difficulty ~ U[difficulty] and an integer seed; written into the model's
    heightfield hfield, whose geom geom sits at z = -offset so that the generated height 0 is
    the world's z = 0. The heightfield's elevation range (hfield size[2]) bounds the relief:
    heights must lie in [-offset, size[2] - offset].

    Parameter names: 'terrain', 'difficulty', 'terrain_seed'.
    """

    kinds: Tuple[str, ...] = KINDS
    difficulty: Tuple[float, float] = (0.0, 1.0)
    hfield: str = "terrain"
    geom: str = "terrain"
    spawn_radius: float = 1.0

    name = "terrain"
    changes_model = True  # its heightfield

    @property
    def names(self) -> Tuple[str, ...]:
        return ("terrain", "difficulty", "terrain_seed")

    def validate(self) -> None:
        if isinstance(self.kinds, str) or len(self.kinds) == 0:
            raise ValueError(f"terrain kinds should be a non-empty sequence of {KINDS}, got "
                             f"{self.kinds!r}")
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"terrain kind should be one of {KINDS}, got {k!r}")
        try:
            low, high = (float(v) for v in self.difficulty)
        except (TypeError, ValueError):
            raise ValueError(f"terrain difficulty should be a (low, high) pair, got "
                             f"{self.difficulty!r}") from None
        if not (0.0 <= low <= high <= 1.0):
            raise ValueError(f"terrain difficulty range should lie in [0, 1] with low <= high, "
                             f"got [{low}, {high}]")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        kinds = np.array([KINDS.index(k) for k in self.kinds], dtype=float)
        kind = kinds[rng.integers(len(kinds), size=n)]
        difficulty = rng.uniform(self.difficulty[0], self.difficulty[1], size=n)
        seed = rng.integers(0, 10**6, size=n).astype(float)  # exact in a task's printout
        return np.stack([kind, difficulty, seed], axis=1)

    def describe(self) -> str:
        return (f"terrain in {{{', '.join(self.kinds)}}}, difficulty ~ "
                f"U[{self.difficulty[0]:g}, {self.difficulty[1]:g}], terrain_seed")

    def override(self) -> Tuple[str, Any]:
        return ("terrain kinds, or {'kinds': [...], 'difficulty': (low, high)}",
                {"kinds": list(self.kinds), "difficulty": tuple(self.difficulty)})

    def extremes(self) -> Tuple[float, ...]:
        return ()  # its values are written into the heightfield, not into a model field

    def with_range(self, value: Any) -> "Terrain":
        """value: a sequence of kind names, or a dict with 'kinds' and/or 'difficulty'."""
        if isinstance(value, dict):
            unknown = set(value) - {"kinds", "difficulty"}
            if unknown:
                raise ValueError(f"terrain takes 'kinds' and 'difficulty', got {sorted(value)}")
            out = dataclasses.replace(
                self, kinds=tuple(value.get("kinds", self.kinds)),
                difficulty=tuple(value.get("difficulty", self.difficulty)))
        elif isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"terrain should be a sequence of kinds {KINDS} or a dict with "
                             f"'kinds' and 'difficulty', got {value!r}")
        else:
            out = dataclasses.replace(self, kinds=tuple(value))
        out.validate()
        return out

    def outside(self, values: Dict[str, float]) -> Optional[str]:
        """A description of the training range when the task lies outside it."""
        kind, difficulty = int(values["terrain"]), values["difficulty"]
        if KINDS[kind] not in self.kinds:
            return f"terrain={KINDS[kind]!r} is none of its training kinds {list(self.kinds)}"
        low, high = self.difficulty
        if not low <= difficulty <= high:
            return (f"difficulty={difficulty:g} lies outside its training range [{low:g}, "
                    f"{high:g}]")
        return None

    def check_values(self, values: Dict[str, float]) -> None:
        kind, difficulty, seed = (values[n] for n in self.names)
        if kind != int(kind) or not 0 <= kind < len(KINDS):
            raise ValueError(f"terrain should be an index into {KINDS}, got {kind}")
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty should be in [0, 1], got {difficulty}")
        if seed != int(seed) or seed < 0:
            raise ValueError(f"terrain_seed should be an integer >= 0, got {seed}")

    def layout(self, model: mujoco.MjModel) -> Tuple[int, Tuple[int, int], Tuple[float, float],
                                                     float, float]:
        """(hfield id, (rows, columns), (half_x, half_y), elevation range, offset) of the
        model's heightfield."""
        hid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_HFIELD, self.hfield)
        if hid < 0:
            raise ValueError(f"terrain: the model has no heightfield {self.hfield!r}")
        gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, self.geom)
        if gid < 0 or model.geom_dataid[gid] != hid:
            raise ValueError(f"terrain: the model has no geom {self.geom!r} of heightfield "
                             f"{self.hfield!r}")
        size = model.hfield_size[hid]
        offset = -float(model.geom_pos[gid][2])
        shape = (int(model.hfield_nrow[hid]), int(model.hfield_ncol[hid]))
        return hid, shape, (float(size[0]), float(size[1])), float(size[2]), offset

    def heights(self, model: mujoco.MjModel, values: Dict[str, float]) -> np.ndarray:
        """The task's terrain (rows, columns), m, on the model's heightfield grid."""
        _, shape, half, _, _ = self.layout(model)
        return self._generate(values, shape, half)

    def _generate(self, values: Dict[str, float], shape: Tuple[int, int],
                  half: Tuple[float, float]) -> np.ndarray:
        self.check_values(values)
        return generate(KINDS[int(values["terrain"])], values["difficulty"],
                        int(values["terrain_seed"]), shape, half, self.spawn_radius)

    def apply(self, model: mujoco.MjModel, values: Dict[str, float]) -> None:
        """Writes the task's terrain into model's heightfield data (normalised to [0, 1])."""
        hid, shape, half, elevation, offset = self.layout(model)
        h = self._generate(values, shape, half)
        low, high = -offset, elevation - offset
        if h.min() < low - 1e-9 or h.max() > high + 1e-9:
            raise ValueError(f"terrain {KINDS[int(values['terrain'])]} (difficulty "
                             f"{values['difficulty']:.3g}) spans heights [{h.min():.3f}, "
                             f"{h.max():.3f}] m; the heightfield {self.hfield!r} holds "
                             f"[{low:.3f}, {high:.3f}] m")
        adr = model.hfield_adr[hid]
        model.hfield_data[adr:adr + shape[0] * shape[1]] = ((h + offset) / elevation).ravel()
