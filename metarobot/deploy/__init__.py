"""Running controllers on a robot: export -> robot protocol -> fixed-rate loop -> report.

    export("checkpoints/HalfCheetahVel.safetensors", "onnx", "cheetah.onnx")   # or "native"
    robot = UdpRobot("127.0.0.1", 9870)          # a robot process (sim_robot: a simulated one)
    report = run(policy_from_checkpoint(...), robot, episodes=4, adapt_steps=1, report_dir="hil")

- export: the policy's deterministic action as the robot receives it (the mean, mapped onto
  the actuators' control ranges as the families do) as ONNX or as flat weights with a
  dependency-free C++ evaluator, plus metadata (observation layout, actions, control period).
- robot: the Robot protocol (spec, reset, read, send, stop), a UDP client of the binary wire
  protocol of docs/hil.md, and an adapter that takes any gymnasium.Env as the robot.
- sim_robot: one simulation of a task behind the wire protocol, paced to wall-clock time, with
  the gap to a real robot (sensor noise, action latency, dropped packets, saturation, dynamics).
- runner: the fixed-rate loop with timing statistics, a watchdog and per-cycle logs, and
  adaptation on the robot through the meta-learner's own inner step.
"""

from .export import DeployedPolicy, export, load_metadata, observation_layout  # noqa: F401
from .robot import GymRobot, Reading, Robot, RobotSpec  # noqa: F401
