"""Running controllers on a robot: export -> robot protocol -> fixed-rate loop -> report.

    export("checkpoints/HalfCheetahVel.safetensors", "onnx", "cheetah.onnx")   # or "native"
    robot = UdpRobot("127.0.0.1", 9870, key=read_key_file("robot.key"))   # a robot process
    report = run(Controller.from_checkpoint(...), robot, episodes=4, adapt_steps=1,
                 report_dir="hil")

- export: the policy's deterministic action as the robot receives it (the mean, mapped onto
  the actuators' control ranges as the families do) as ONNX or as flat weights with a
  dependency-free C++ evaluator, plus metadata (observation layout, actions, control period)
  and the deployment config.
- deployment: the deployment config (observation scales and offsets, the servo map, motors in
  the robot's order, rates, commands, limits), built from a family in one place, and the
  check of a robot's spec against it.
- policy: the runtime module (observations -> controls) and the interface a robot must match.
- robot: the Robot protocol (spec, reset, read, send, stop, close) and an adapter that takes
  any gymnasium.Env as the robot; protocol: the binary wire format of docs/hil.md (sessions,
  sequence windows, MACs); udp: the runner's side of it.
- sim_robot: one simulation of a task behind the wire protocol, paced to wall-clock time, with
  the gap to a real robot (sensor noise, action latency, dropped packets, saturation, dynamics)
  and a robot's duties (one session at a time, a command timeout into a safe state).
- controller: a checkpoint's policy on the robot and its adaptation by the inner step.
- runner: the fixed-rate loop with timing statistics, a watchdog and per-cycle logs, and
  adaptation on the robot through the meta-learner's own inner step.

Nothing here imports training (train, workers, cluster, trpo, evaluation, cli).
"""

from .controller import Controller  # noqa: F401
from .deployment import deployment_config, load_deployment_config  # noqa: F401
from .export import export, load_metadata  # noqa: F401
from .policy import DeployedPolicy, deployed_policy, observation_layout  # noqa: F401
from .protocol import read_key_file  # noqa: F401
from .robot import GymRobot, Reading, Robot, RobotSpec  # noqa: F401
from .runner import Limits, run  # noqa: F401
from .udp import UdpRobot  # noqa: F401

__all__ = ["Controller", "DeployedPolicy", "GymRobot", "Limits", "Reading", "Robot", "RobotSpec",
           "UdpRobot", "deployed_policy", "deployment_config", "export",
           "load_deployment_config", "load_metadata", "observation_layout", "read_key_file",
           "run"]
