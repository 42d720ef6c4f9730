"""The deployment config: what a robot program needs besides the policy's weights, built from a
task family in one place so that export, the runner (hil) and the simulated robot read the same.

    config = deployment_config(family)                # a JSON-ready dict, format DEPLOY_FORMAT
    obs = observation_from_readings(config, readings)  # raw sensor readings -> policy input
    q_target = joint_targets(config, controls)         # servo families: controls -> q* (rad)

It says, per observation term in order: its kind, its slice of the observation vector, and how
a raw reading becomes the policy's input (obs = clip(scale * (raw - offset))), with the
training's sensor noise and delay for information; the action map (servo: q* = default_pose +
action_scale * a with kp, kd, effort limits and torque-speed envelope per motor; torque: the
control range map the families use); the motors in the robot's order with the policy <-> motor
index map; the policy and physics rates; the commands; and the limits a safety layer needs.
The runner refuses a robot that disagrees with it before the first command
(robot_mismatches).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import mujoco
import numpy as np

from .. import terms as T
from ..actuators import actuator_settings, model_effort_limits
from ..families import TaskFamily
from .policy import action_names, control_period, observation_names

DEPLOY_FORMAT = "metarobot-deploy"
DEPLOY_VERSION = 1
DEPLOY_FILE = "deploy.json"

# how each observation term's raw reading is described for a robot program (the rest of the
# terms read model quantities a robot has no sensor for; their source is the term itself)
_BODY_TERMS = (T.BodyAngularVelocity, T.ProjectedGravity, T.BodyRotation, T.SubtreeCom,
               T.BodyPosition)


def _finite_or_none(value: float) -> Optional[float]:
    """JSON has no inf: an absent limit is null."""
    return float(value) if math.isfinite(value) else None


def _term_entry(term: Any, start: int, size: int, model: mujoco.MjModel,
                family: TaskFamily, timestep: float) -> Dict[str, Any]:
    noise, delay, scale, offset = T.sensor(term)
    clip = None
    if isinstance(term, T.Qvel) and term.clip is not None:
        clip = [-float(term.clip), float(term.clip)]
    elif isinstance(term, T.ExternalForces):
        clip = [float(term.low), float(term.high)]
    entry: Dict[str, Any] = {
        "kind": type(term).__name__, "name": repr(term), "start": start, "size": size,
        "scale": scale,
        "offset": list(offset) if offset else None,
        "clip": clip,
        # a sensor reading: training added noise_std (times the task's noise_scale) to it;
        # informative, a robot's sensors bring their own
        "sensor": hasattr(term, "noise"),
        "noise_std": noise,
        "delay_steps": delay, "delay_ms": delay * timestep * 1e3,
    }
    if isinstance(term, (T.Qpos, T.Qvel)):
        source = "qpos" if isinstance(term, T.Qpos) else "qvel"
        entry["source"] = source
        entry["first"] = int(term.start)
    elif isinstance(term, _BODY_TERMS):
        entry["body"] = term.body
    elif isinstance(term, T.Command) and family.commands is not None:
        entry["commands"] = list(family.commands.names[term.start:term.start + size])
    elif isinstance(term, T.LastAction):
        entry["source"] = "the policy's previous action (policy order, zeros after a reset)"
    return entry


def _motors(family: TaskFamily, model: mujoco.MjModel,
            motor_order: Optional[Sequence[str]]) -> List[Dict[str, Any]]:
    """One record per motor in the robot's order (default: the model's actuator order)."""
    names = list(action_names(model))
    if motor_order is None:  # the family's own word on its robot's order, else the model's
        motor_order = family.motor_order
    order = names if motor_order is None else list(motor_order)
    if sorted(order) != sorted(names) or len(set(order)) != len(order):
        missing = [n for n in names if n not in order]
        unknown = [n for n in order if n not in names]
        raise ValueError(f"motor_order should name each of the model's {len(names)} actuators "
                         f"once; missing {missing}, unknown {unknown}, given {order}")
    act = family.actuators
    servo = act is not None and act.kind == "servo"
    # the family's nominal settings: a task's draws (kp errors, weak motors) are what
    # adaptation finds out, not what a robot is told
    settings = _servo_settings(family, model) if servo else {}
    ctrl = np.array(model.actuator_ctrlrange, np.float64)
    limited = np.array(model.actuator_ctrllimited, bool) | family.normalize_actions
    efforts = model_effort_limits(model)
    out = []
    for motor, name in enumerate(order):
        i = names.index(name)  # the policy's action index (the model's actuator order)
        joint = int(model.actuator_trnid[i, 0])
        jnt_range = ([float(v) for v in model.jnt_range[joint]]
                     if model.jnt_limited[joint] else None)
        record: Dict[str, Any] = {"motor": motor, "name": name, "policy_index": i,
                                  "joint": model.joint(joint).name, "joint_range": jnt_range}
        if servo:
            record.update({k: _finite_or_none(v[i]) for k, v in settings.items()})
        else:
            low, high = float(ctrl[i, 0]), float(ctrl[i, 1])
            record.update({"ctrl_low": low if limited[i] else None,
                           "ctrl_high": high if limited[i] else None,
                           "centre": 0.5 * (low + high) if family.normalize_actions else 0.0,
                           "half_range": 0.5 * (high - low) if family.normalize_actions
                           else 1.0,
                           "effort_limit": _finite_or_none(efforts[i])})
        out.append(record)
    return out


def _servo_settings(family: TaskFamily, model: mujoco.MjModel) -> Dict[str, np.ndarray]:
    """The family's nominal servo settings per model actuator (nu,) each: what
    actuators.actuator_settings gives a simulation whose task draws none of them."""
    s = actuator_settings(family.actuators, model, [{}])
    nu = model.nu
    return {"default_pose": np.array(s["q_default"]), "action_scale": np.array(s["action_scale"]),
            "kp": np.array(s["kp"][:nu]), "kd": np.array(s["kd"][:nu]),
            "strength": np.array(s["strength"][:nu]),
            "feedforward": np.array(s["feedforward"][:nu]),
            "effort_limit": np.array(s["effort_limit"][:nu]),
            "saturation_torque": np.array(s["saturation_torque"][:nu]),
            "max_velocity": np.array(s["max_velocity"][:nu])}


def deployment_config(family: TaskFamily, *, motor_order: Optional[Sequence[str]] = None,
                      model: Optional[mujoco.MjModel] = None,
                      family_overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The deployment config of a policy trained on family (a JSON-ready dict; the module's
    docstring and docs/deploy.md give its fields). motor_order: the actuators' names in the
    robot's motor order (default the family's motor_order, else the model's actuator order;
    the policy <-> motor map follows from it). family_overrides: recorded, the overrides the family was made with."""
    if not isinstance(family, TaskFamily):
        raise ValueError(f"family should be a TaskFamily, got {type(family).__name__}")
    model = model or family.load_model()
    timestep = float(model.opt.timestep)
    index = {n: i for i, n in enumerate(family.parameter_names)}
    terms, at = [], 0
    for term in family.observation:
        size = int(term.compile(model, index)[3])
        terms.append(_term_entry(term, at, size, model, family, timestep))
        at += size
    names = list(observation_names(family, model))
    for t in terms:  # the joint of each entry, for a robot that reads its encoders by name
        if t.get("source") in ("qpos", "qvel"):
            t["joints"] = [n.split(" ", 1)[1] for n in names[t["start"]:t["start"] + t["size"]]]
    act = family.actuators
    kind = "servo" if act is not None and act.kind == "servo" else "torque"
    delay = act.delay_range() if act is not None else (0.0, 0.0)
    motors = _motors(family, model, motor_order)
    tilt = [t for t in family.termination if isinstance(t, T.Tilt)]
    period = control_period(family, model)
    if kind == "servo":
        rule = ("the policy's controls are actions a; each motor's position target is q* = "
                "default_pose + action_scale * a, tracked by tau = strength * (kp (q* - q) - "
                "kd dq) + feedforward, clipped to +-min(effort_limit, saturation_torque (1 - "
                "|dq| / max_velocity))")
    elif family.normalize_actions:
        rule = ("the policy's controls are the motors' commands: centre + half_range * a, "
                "clipped to [ctrl_low, ctrl_high]")
    else:
        rule = ("the policy's controls are the motors' commands: a, clipped to [ctrl_low, "
                "ctrl_high] where a motor has a range")
    return {
        "format": DEPLOY_FORMAT, "version": DEPLOY_VERSION,
        "family": family.name,
        "family_overrides": dict(family_overrides or {}),
        "rates": {"policy_hz": 1.0 / period, "control_period_s": period,
                  "physics_hz": 1.0 / timestep, "decimation": int(family.frame_skip)},
        "observation": {"size": at, "terms": terms, "names": names,
                        "rule": "obs[start:start+size] = clip(scale * (raw - offset)); "
                                "noise_std and delay are what training simulated"},
        "action": {"size": int(model.nu), "kind": kind, "rule": rule,
                   "normalized": bool(family.normalize_actions),
                   "command_delay_ms": list(delay)},
        "motors": motors,
        "commands": None if family.commands is None else {
            "names": list(family.commands.names),
            "low": [float(v) for v in family.commands.low],
            "high": [float(v) for v in family.commands.high],
            "resample_steps": family.commands.resample_steps},
        "limits": {"tilt_max_degrees": float(tilt[0].max_degrees) if tilt else None,
                   "tilt_body": tilt[0].body if tilt else None},
    }


# -------------------------------------------------------------------------------- reading it

def check_deployment_config(config: Any, where: str = "the deployment config") -> None:
    """ValueError naming the field unless config is a deployment config of this version whose
    parts agree (slices tile the observation, motors are a permutation of the actions)."""
    if not isinstance(config, dict) or config.get("format") != DEPLOY_FORMAT:
        raise ValueError(f"{where} is not a metarobot deployment config (format "
                         f"{DEPLOY_FORMAT!r})")
    if config.get("version") != DEPLOY_VERSION:
        raise ValueError(f"{where}: version {config.get('version')!r}, this metarobot reads "
                         f"version {DEPLOY_VERSION}")
    for key in ("family", "rates", "observation", "action", "motors", "limits"):
        if key not in config:
            raise ValueError(f"{where}: field {key!r} is missing")
    at = 0
    for t in config["observation"]["terms"]:
        if t["start"] != at:
            raise ValueError(f"{where}: observation term {t['kind']} starts at {t['start']}, "
                             f"expected {at}")
        at += t["size"]
    if at != config["observation"]["size"]:
        raise ValueError(f"{where}: observation terms hold {at} entries, size says "
                         f"{config['observation']['size']}")
    indices = sorted(m["policy_index"] for m in config["motors"])
    if indices != list(range(config["action"]["size"])):
        raise ValueError(f"{where}: motors' policy_index should be a permutation of 0.."
                         f"{config['action']['size'] - 1}, got {indices}")


def load_deployment_config(path: Union[str, Path]) -> Dict[str, Any]:
    """A deploy.json (or an export's folder / .onnx beside which it lies), checked."""
    path = Path(path)
    if path.is_dir():
        path = path / DEPLOY_FILE
    elif path.suffix == ".onnx":
        path = deploy_path_of_onnx(path)
    if not path.is_file():
        raise ValueError(f"no deployment config at {str(path)!r}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not JSON: {exc}") from None
    check_deployment_config(config, repr(str(path)))
    return config


def deploy_path_of_onnx(onnx_path: Union[str, Path]) -> Path:
    """Where an ONNX export's deployment config lies: P.onnx -> P.deploy.json."""
    p = Path(onnx_path)
    return p.with_name((p.stem if p.suffix == ".onnx" else p.name) + ".deploy.json")


def motor_from_policy(config: Dict[str, Any]) -> np.ndarray:
    """(nu,) int: controls_motor = controls_policy[motor_from_policy] (robot's order)."""
    return np.array([m["policy_index"] for m in config["motors"]], np.int64)


def motor_names(config: Dict[str, Any]) -> List[str]:
    """The motors' names in the robot's order."""
    return [m["name"] for m in config["motors"]]


def observation_from_readings(config: Dict[str, Any],
                              readings: Sequence[Sequence[float]]) -> np.ndarray:
    """The policy's input from raw readings, one array per observation term in order (the
    term's size; joints in the policy's order, in rad, rad/s, m; commands in their units):
    obs[start:start+size] = clip(scale * (raw - offset)). Returns (obs_dim,) float32."""
    terms = config["observation"]["terms"]
    if len(readings) != len(terms):
        raise ValueError(f"readings should hold {len(terms)} arrays (one per observation "
                         f"term), got {len(readings)}")
    obs = np.zeros(config["observation"]["size"], np.float64)
    for t, raw in zip(terms, readings):
        raw = np.asarray(raw, np.float64).reshape(-1)
        if raw.size != t["size"]:
            raise ValueError(f"observation term {t['kind']} should read {t['size']} values, "
                             f"got {raw.size}")
        value = t["scale"] * (raw - (np.asarray(t["offset"]) if t["offset"] else 0.0))
        if t["clip"] is not None:
            value = np.clip(value, *t["clip"])
        obs[t["start"]:t["start"] + t["size"]] = value
    return obs.astype(np.float32)


def joint_targets(config: Dict[str, Any], controls_policy: np.ndarray) -> np.ndarray:
    """Servo families: the motors' position targets q* (..., nu) in the robot's motor order,
    rad (m), from the policy's controls (..., act_dim) in the policy's order."""
    if config["action"]["kind"] != "servo":
        raise ValueError(f"{config['family']} drives torques, not position servos: its "
                         f"controls are the motors' commands")
    order = motor_from_policy(config)
    c = np.asarray(controls_policy, np.float64)[..., order]
    default = np.array([m["default_pose"] for m in config["motors"]])
    scale = np.array([m["action_scale"] for m in config["motors"]])
    return default + scale * c


# ----------------------------------------------------------------------- the robot against it

def robot_mismatches(config: Dict[str, Any], spec: Any) -> List[str]:
    """The differences between a robot's spec (metarobot.deploy.RobotSpec) and the deployment
    config, each naming the field, what the config expects and what the robot said, most
    basic first: family, observation size and names in order, action size and motor names in
    the robot's order, control period. A robot that names nothing differs (nothing shows it
    is the policy's robot)."""
    out = []
    if spec.family != config["family"]:
        out.append(f"family: the robot runs {spec.family or '(none named)'!r}, the "
                   f"deployment config is for {config['family']!r}")
    for what, size, got, expected in (
            ("observation", spec.obs_dim, spec.observation_names,
             config["observation"]["names"]),
            ("action", spec.act_dim, spec.action_names, motor_names(config))):
        want = len(expected)
        if size != want:
            out.append(f"{what} size: the robot has {size}, the deployment config {want}")
            continue
        if not got:
            out.append(f"{what} names: the robot names no {what} entries (expected "
                       f"{', '.join(expected[:3])}, ...)")
            continue
        for i, (a, b) in enumerate(zip(got, expected)):
            if a != b:
                noun = "motor" if what == "action" else "observation"
                out.append(f"{what} names: {noun} {i} is {a!r} on the robot, {b!r} in the "
                           f"deployment config (for the policy)")
                break
    period = config["rates"]["control_period_s"]
    if not math.isclose(spec.control_period, period, rel_tol=1e-6):
        out.append(f"control period: the robot's is {spec.control_period * 1e3:g} ms "
                   f"({1 / spec.control_period:g} Hz), the deployment config's "
                   f"{period * 1e3:g} ms ({1 / period:g} Hz)")
    return out


# the parts of a config that the policy's weights depend on: an exported config may differ
# from the checkpoint's own only in the motor order (a robot that numbers its motors otherwise)
_POLICY_FIELDS = ("family", "rates", "observation", "action")


def same_policy_interface(config: Dict[str, Any], reference: Dict[str, Any]) -> List[str]:
    """The fields (dotted) where config differs from reference outside the motor order."""
    out = []

    def walk(a: Any, b: Any, at: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{at}.{k}" if at else k)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{at}[{i}]")
        elif isinstance(a, float) and isinstance(b, (int, float)) and \
                math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            return
        elif a != b:
            out.append(f"{at}: {a!r} here, {b!r} for the policy")
    for key in _POLICY_FIELDS:
        walk(config.get(key), reference.get(key), key)
    # motors: the same records, in any order
    by_name = {m["name"]: m for m in reference["motors"]}
    for m in config["motors"]:
        ref = by_name.get(m["name"])
        if ref is None:
            out.append(f"motors: {m['name']!r} is not one of the policy's motors")
            continue
        walk({k: v for k, v in m.items() if k != "motor"},
             {k: v for k, v in ref.items() if k != "motor"}, f"motors[{m['name']}]")
    return out


# ------------------------------------------------------------------- what the robot measured

@dataclasses.dataclass(frozen=True)
class Sensors:
    """What a robot measured, in raw units, for the logs: q (n,) rad (m for a slide joint)
    and dq (n,) rad/s per motor in the robot's order (the motor's joint; NaN where the
    robot gives none); gravity (3,) the unit gravity vector in the body frame and
    angular_velocity (3,) rad/s in the body frame, None where the robot gives none."""

    q: np.ndarray
    dq: np.ndarray
    gravity: Optional[np.ndarray] = None
    angular_velocity: Optional[np.ndarray] = None


def sensors_from_observation(config: Dict[str, Any], obs: Sequence[float]) -> Sensors:
    """The raw readings back from an observation (obs_dim,) by the config's rule inverted,
    raw = obs / scale + offset, for the motors' joints (Qpos, Qvel terms), the projected
    gravity and the body's angular velocity; for a robot that sends only observations (the
    UDP protocol). An entry at its term's clip bound reads the bound; an entry of scale 0,
    or a joint no term observes, reads NaN."""
    obs = np.asarray(obs, np.float64).reshape(-1)
    if obs.size != config["observation"]["size"]:
        raise ValueError(f"obs should hold {config['observation']['size']} values, got "
                         f"{obs.size}")
    motor_of_joint = {m["joint"]: i for i, m in enumerate(config["motors"])}
    n = len(config["motors"])
    q, dq = np.full(n, np.nan), np.full(n, np.nan)
    imu: Dict[str, np.ndarray] = {}
    for t in config["observation"]["terms"]:
        if t["scale"] == 0:
            continue
        offset = np.asarray(t["offset"], np.float64) if t["offset"] else 0.0
        raw = obs[t["start"]:t["start"] + t["size"]] / t["scale"] + offset
        if t.get("source") in ("qpos", "qvel"):
            out = q if t["source"] == "qpos" else dq
            for joint, value in zip(t["joints"], raw):
                if joint in motor_of_joint:
                    out[motor_of_joint[joint]] = value
        elif t["kind"] in ("ProjectedGravity", "BodyAngularVelocity"):
            imu[t["kind"]] = raw
    return Sensors(q, dq, imu.get("ProjectedGravity"), imu.get("BodyAngularVelocity"))


def motor_targets(config: Dict[str, Any], controls_motor: np.ndarray) -> Optional[np.ndarray]:
    """Servo families: each motor's position target q* (n,) rad in the robot's order, from
    the controls in the robot's order (as the runner sends them), by joint_targets' rule;
    None for torque families (their controls are the motors' commands)."""
    if config["action"]["kind"] != "servo":
        return None
    c = np.asarray(controls_motor, np.float64)
    policy_order = np.empty_like(c)
    policy_order[motor_from_policy(config)] = c
    return joint_targets(config, policy_order)
