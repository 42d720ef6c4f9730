"""A run's cycles as an MCAP file (JSON messages with JSON schemas) that Foxglove and mcap's
readers open: runner -> McapLog.cycle / transition / episode / swap -> one topic each.

    log = McapLog("hil-report/run.mcap", controller.deploy, spec)
    log.cycle(row, action, sensors)      # per acted cycle: /observation /action /joints /imu
    log.transition(t, "hold", "policy", "the policy takes over")         # /safety
    log.close()

Log and publish times are the run's monotonic clock (time.monotonic) in integer ns: a
cycle's /observation, /joints and /imu at the reading's arrival, /action and /timing when
the controls were sent (a stale cycle's /timing at its tick). Per topic they increase.
Records go to the file as they come (no chunks) and the file is flushed every cycle, so a
stopped run leaves every cycle up to the stop (a reader streams a file cut short without its
summary). The metadata record "metarobot" holds the family, the observation's names and the
motors' names in the robot's order, which the messages' arrays follow.

Topics (message fields; arrays in the order the metadata names):
- /observation: stage, episode, cycle, step, obs (obs_dim), reward, ret, done, safe
- /action: stage, episode, cycle, step, action (the policy's, act_dim, policy order),
  controls (as sent, motor order), position_target (rad per motor: default_pose +
  action_scale * a; null for torque families)
- /joints: stage, episode, cycle, name (motors), position (rad), velocity (rad/s): measured
- /imu: stage, episode, cycle, projected_gravity (3), angular_velocity (3, rad/s), each null
  where the robot gives none; only for robots that give either
- /timing: stage, episode, cycle, scheduled_s, tick_s, read_s, sent_s (the run's clock),
  robot_stamp_s (the robot's), jitter_us, latency_us, miss, stale
- /safety: time_s, source, target, reason: the robot's safety transitions and the run's stop
- /episode: stage, episode, return, steps, complete, terminated: at each episode's end
- /adaptation: step, step_size, time_s, robot_phase: each adapted policy swapped in
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from .deployment import Sensors, motor_names
from .report import Cycle, json_safe
from .robot import RobotSpec

# the file's name beside report.json when no other path is given
MCAP_FILE = "run.mcap"

_NUMBER = {"type": ["number", "null"]}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_STRING = {"type": "string"}


def _vector(description: str) -> Dict[str, Any]:
    return {"type": ["array", "null"], "items": _NUMBER, "description": description}


_WHERE = {"stage": _INT, "episode": _INT, "cycle": _INT}

# topic -> (schema name, properties): the JSON schemas Foxglove reads the messages by
SCHEMAS: Dict[str, tuple] = {
    "/observation": ("metarobot.Observation", {
        **_WHERE, "step": _INT, "obs": _vector("the policy's input (obs_dim)"),
        "reward": _NUMBER, "ret": _NUMBER, "done": _BOOL, "safe": _BOOL}),
    "/action": ("metarobot.Action", {
        **_WHERE, "step": _INT,
        "action": _vector("the policy's action, policy order"),
        "controls": _vector("controls as sent, the robot's motor order"),
        "position_target": _vector("q* (rad) per motor: default_pose + action_scale * a")}),
    "/joints": ("metarobot.Joints", {
        **_WHERE, "name": {"type": "array", "items": _STRING},
        "position": _vector("measured joint positions (rad), motor order"),
        "velocity": _vector("measured joint velocities (rad/s), motor order")}),
    "/imu": ("metarobot.Imu", {
        **_WHERE, "projected_gravity": _vector("unit gravity in the body frame"),
        "angular_velocity": _vector("body angular velocity (rad/s), body frame")}),
    "/timing": ("metarobot.Timing", {
        **_WHERE, "scheduled_s": _NUMBER, "tick_s": _NUMBER, "read_s": _NUMBER,
        "sent_s": _NUMBER, "robot_stamp_s": _NUMBER, "jitter_us": _NUMBER,
        "latency_us": _NUMBER, "miss": _BOOL, "stale": _BOOL}),
    "/safety": ("metarobot.SafetyTransition", {
        "time_s": _NUMBER, "source": _STRING, "target": _STRING, "reason": _STRING}),
    "/episode": ("metarobot.Episode", {
        "stage": _INT, "episode": _INT, "return": _NUMBER, "steps": _INT,
        "complete": _BOOL, "terminated": _BOOL}),
    "/adaptation": ("metarobot.Adaptation", {
        "step": _INT, "step_size": {"type": ["number", "string", "null"]},
        "time_s": _NUMBER, "robot_phase": {"type": ["string", "null"]}}),
}


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _list(value: Optional[Sequence[float]]) -> Optional[list]:
    return None if value is None else [float(v) for v in np.asarray(value).reshape(-1)]


class McapLog:
    """The run's MCAP file (module docstring). config: the deployment config the run goes
    by; spec: the robot's. Needs the mcap package (a dependency of metarobot)."""

    def __init__(self, path: Union[str, Path], config: Dict[str, Any], spec: RobotSpec):
        from mcap.writer import CompressionType, Writer
        self.path = Path(path)
        self.file = open(self.path, "wb")
        # no chunks: each record reaches the file at once, so a stop leaves every cycle
        self.writer = Writer(self.file, use_chunking=False,
                             compression=CompressionType.NONE)
        self.writer.start(profile="", library="metarobot")
        self.names = motor_names(config)
        self.writer.add_metadata("metarobot", {
            "family": config["family"],
            "observation_names": json.dumps(list(config["observation"]["names"])),
            "motor_names": json.dumps(self.names),
            "action_kind": config["action"]["kind"],
            "control_period_s": repr(float(spec.control_period)),
            "robot_family": spec.family})
        self.channels: Dict[str, int] = {}
        self.counts: Dict[str, int] = {}
        for topic, (name, properties) in SCHEMAS.items():
            schema = {"title": name, "type": "object", "properties": properties}
            sid = self.writer.register_schema(name, "jsonschema",
                                              json.dumps(schema).encode())
            self.channels[topic] = self.writer.register_channel(topic, "json", sid)
            self.counts[topic] = 0
        self._closed = False

    def _write(self, topic: str, at: float, message: Dict[str, Any]) -> None:
        data = json.dumps(json_safe(message), allow_nan=False).encode()
        self.counts[topic] += 1
        self.writer.add_message(self.channels[topic], _ns(at), data, _ns(at),
                                sequence=self.counts[topic])

    def cycle(self, row: Cycle, action: Optional[np.ndarray] = None,
              targets: Optional[np.ndarray] = None,
              sensors: Optional[Sensors] = None) -> None:
        """A cycle of the loop: an acted one (row.controls set) on every per-cycle topic,
        a stale one on /timing only. action: the policy's (act_dim,); targets: q* (n,) rad
        or None; sensors: what the robot measured (None: nothing)."""
        where = {"stage": row.stage, "episode": row.episode, "cycle": row.cycle}
        acted = row.controls is not None
        if acted:
            self._write("/observation", row.read, {
                **where, "step": row.step, "obs": _list(row.obs), "reward": row.reward,
                "ret": row.ret, "done": row.done, "safe": row.safe})
            if sensors is not None:
                self._write("/joints", row.read, {
                    **where, "name": self.names, "position": _list(sensors.q),
                    "velocity": _list(sensors.dq)})
                if sensors.gravity is not None or sensors.angular_velocity is not None:
                    self._write("/imu", row.read, {
                        **where, "projected_gravity": _list(sensors.gravity),
                        "angular_velocity": _list(sensors.angular_velocity)})
            self._write("/action", row.sent, {
                **where, "step": row.step, "action": _list(action),
                "controls": _list(row.controls), "position_target": _list(targets)})
        self._write("/timing", row.sent if acted else row.tick, {
            **where, "scheduled_s": row.scheduled, "tick_s": row.tick, "read_s": row.read,
            "sent_s": row.sent, "robot_stamp_s": row.robot_stamp, "jitter_us": row.jitter_us,
            "latency_us": row.latency_us, "miss": row.miss, "stale": row.stale})
        self.file.flush()

    def transition(self, at: float, source: str, target: str, reason: str) -> None:
        """A safety transition (at: s on the run's clock)."""
        self._write("/safety", at, {"time_s": at, "source": source, "target": target,
                                    "reason": reason})
        self.file.flush()

    def episode(self, at: float, stage: int, episode: int, record: Dict[str, Any]) -> None:
        """An episode's end: record holds return, steps, complete, terminated."""
        self._write("/episode", at, {"stage": stage, "episode": episode,
                                     **{k: record[k] for k in ("return", "steps", "complete",
                                                               "terminated")}})
        self.file.flush()

    def swap(self, at: float, step: int, step_size: Any, robot_phase: Optional[str]) -> None:
        """An adapted policy swapped in (after adaptation step `step`, 0: the first)."""
        self._write("/adaptation", at, {"step": step, "step_size": step_size, "time_s": at,
                                        "robot_phase": robot_phase})
        self.file.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.finish()
            self.file.close()
