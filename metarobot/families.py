"""Task families as data: a model, the distributions of task parameters, and the observation,
reward and termination terms the C++ core evaluates.

    family = metarobot.make_family("HalfCheetahVel", horizon=100)
    tasks = family.sample_tasks(40, seed=1)      # frozen, printable, JSON round-trippable
    sim = metarobot.BatchSim(family, tasks)

The families of the MAML paper (HalfCheetahVel, HalfCheetahDir, AntVel, AntDir) follow its
released code: model, timestep, frame_skip 1, horizon 200, reset noise, observation, reward and
termination; AntGoal follows later work (goal uniform on a disc of radius 3). The classes
are metarobot.task_family's; this module holds the built-in families and the registry.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List

from . import parameters as P
from . import terms as T
from .task_family import (OutOfDistributionWarning, Task, TaskFamily,  # noqa: F401
                          actions_to_controls, envs_dir)
from .terrain import Terrain

_CHEETAH_OBS = (T.Qpos(1), T.Qvel(), T.SubtreeCom("torso"))
_CHEETAH_CTRL = T.ControlCost("ctrl_cost", weight=-0.05, clip=True)
_ANT_OBS = (T.Qpos(), T.Qvel(), T.ExternalForces(-1.0, 1.0), T.BodyRotation("torso"),
            T.SubtreeCom("torso"))
_ANT_COSTS = (T.ControlCost("ctrl_cost", weight=-0.005, scale=150.0),
              T.ContactCost("contact_cost", weight=-0.0005, low=-1.0, high=1.0),
              T.Constant("survive", 0.05))
_ANT_TERMINATION = (T.QposOutside(2, 0.2, 1.0), T.NonFiniteState())


def _cheetah(name, reward, parameters, description):
    return TaskFamily(name=name, model_file="half_cheetah.xml", frame_skip=1, horizon=200,
                      observation=_CHEETAH_OBS, reward=reward, termination=(),
                      parameters=parameters, reset_qpos_noise=0.01, reset_qvel_noise=0.1,
                      normalize_actions=True, description=description)


def _ant(name, reward, parameters, description):
    return TaskFamily(name=name, model_file="ant.xml", frame_skip=1, horizon=200,
                      observation=_ANT_OBS, reward=reward + _ANT_COSTS,
                      termination=_ANT_TERMINATION, parameters=parameters,
                      reset_qpos_noise=0.01, reset_qvel_noise=0.1, init_keyframe="init",
                      normalize_actions=True, description=description)


def _planar_params(name, model_file, termination, description):
    """rand_param_envs' HopperRandParams / Walker2DRandParams: Gymnasium's planar walkers with
    every body mass, inertia, joint damping and geom friction scaled by 1.5 (1.3 for damping)
    ** U(-3, 3) per task."""
    family = TaskFamily(
        name=name, model_file=model_file, frame_skip=4, horizon=200,
        observation=(T.Qpos(1), T.Qvel(clip=10.0)),
        reward=(T.QposRate("forward", index=0), T.Constant("alive", 1.0),
                T.ControlCost("ctrl_cost", weight=-1e-3)),
        termination=termination, parameters=(), reset_qpos_noise=0.005,
        reset_qvel_noise=0.005, reset_noise="uniform", description=description)
    return family.with_dynamics(
        body_mass={"log_base": 1.5, "low": -3.0, "high": 3.0},
        body_inertia={"log_base": 1.5, "low": -3.0, "high": 3.0},
        dof_damping={"log_base": 1.3, "low": -3.0, "high": 3.0},
        geom_friction={"log_base": 1.5, "low": -3.0, "high": 3.0})


_FAMILIES: Dict[str, TaskFamily] = {
    f.name: f for f in (
        _cheetah("HalfCheetahVel",
                 (T.VelocityError("velocity", body="torso", goal="goal_velocity", weight=-1.0),
                  _CHEETAH_CTRL),
                 (P.Uniform("goal_velocity", 0.0, 2.0),),
                 "run at a goal forward velocity v* ~ U[0, 2] m/s"),
        _cheetah("HalfCheetahDir",
                 (T.ForwardVelocity("velocity", body="torso", direction="direction"),
                  _CHEETAH_CTRL),
                 (P.Choice("direction", (-1.0, 1.0)),),
                 "run forward (+1) or backward (-1)"),
        _ant("AntVel",
             (T.VelocityError("velocity", body="torso", goal="goal_velocity", weight=-1.0),
              T.Constant("velocity_offset", 1.0)),
             (P.Uniform("goal_velocity", 0.0, 3.0),),
             "walk at a goal forward velocity v* ~ U[0, 3] m/s"),
        _ant("AntDir",
             (T.ForwardVelocity("velocity", body="torso", direction="direction"),),
             (P.Choice("direction", (-1.0, 1.0)),),
             "walk forward (+1) or backward (-1) along x"),
        _planar_params("HopperParams", "hopper.xml",
                       (T.NonFiniteState(), T.StateBound(2, 100.0),
                        T.QposOutside(1, 0.7, math.inf), T.QposOutside(2, -0.2, 0.2)),
                       "hop forward; masses, inertias, damping and frictions vary per task"),
        _planar_params("Walker2DParams", "walker2d.xml",
                       (T.NonFiniteState(), T.QposOutside(1, 0.8, 2.0),
                        T.QposOutside(2, -1.0, 1.0)),
                       "walk forward; masses, inertias, damping and frictions vary per task"),
        _ant("AntGoal",
             (T.GoalDistance("goal_distance", body="torso", goal=("goal_x", "goal_y")),),
             (P.Disc("goal_x", "goal_y", 3.0),),
             "walk to a 2-D goal uniform on a disc of radius 3 m"),
    )
}


def _terrain_ant(name, reward, parameters, description):
    """The MAML ant on a heightfield terrain per task, with a 5 x 3 height scan (0.4 m apart)
    around the torso; the health range is the torso's height above the ground under it."""
    return TaskFamily(
        name=name, model_file="ant_terrain.xml", frame_skip=1, horizon=200,
        observation=_ANT_OBS + (T.HeightScan("torso", columns=5, rows=3, spacing=0.4),),
        reward=reward + _ANT_COSTS,
        termination=(T.HeightAboveTerrain("torso", 0.2, 1.0), T.NonFiniteState()),
        parameters=parameters + (Terrain(),), reset_qpos_noise=0.01, reset_qvel_noise=0.1,
        init_keyframe="init", normalize_actions=True, description=description)


def _terrain_walker(name, reward, parameters, description):
    """The planar biped on a heightfield terrain per task (flat within 0.5 m of the start),
    with a 9-point height scan 0.2 m apart from 0.2 m behind to 1.4 m ahead of the torso."""
    return TaskFamily(
        name=name, model_file="walker2d_terrain.xml", frame_skip=4, horizon=200,
        observation=(T.Qpos(1), T.Qvel(clip=10.0),
                     T.HeightScan("torso", columns=9, spacing=0.2, forward=0.6)),
        reward=reward + (T.Constant("alive", 1.0), T.ControlCost("ctrl_cost", weight=-1e-3)),
        termination=(T.NonFiniteState(), T.HeightAboveTerrain("torso", 0.8, 2.0),
                     T.QposOutside(2, -1.0, 1.0)),
        parameters=parameters + (Terrain(spawn_radius=0.5),), reset_qpos_noise=0.005,
        reset_qvel_noise=0.005, reset_noise="uniform", description=description)


_ARM_OBS = (T.Qpos(0, 4), T.Qvel(0, 4), T.BodyPosition("fingertip"))
_ARM_CTRL = T.ControlCost("ctrl_cost", weight=-0.01)
_REACH_GOAL = ("goal_x", "goal_y", "goal_z")
_PUSH_GOAL = ("goal_x", "goal_y")


def _arm_reach():
    goal = T.GoalDistance("goal_distance", body="fingertip", goal=_REACH_GOAL)
    return TaskFamily(
        name="ArmReach", model_file="arm_reach.xml", frame_skip=4, horizon=100,
        observation=_ARM_OBS + (T.TaskParameters(_REACH_GOAL, hidden=True),),
        reward=(goal, _ARM_CTRL), termination=(T.NonFiniteState(),),
        parameters=(P.Uniform("goal_x", 0.25, 0.6), P.Uniform("goal_y", -0.35, 0.35),
                    P.Uniform("goal_z", 0.05, 0.35)),
        writes=tuple(T.WriteField(n, "site_pos", "goal", i) for i, n in enumerate(_REACH_GOAL)),
        success=T.Success(goal, 0.05), reset_qpos_noise=0.02, reset_qvel_noise=0.02,
        description="move the fingertip to a 3-D goal; success within 5 cm")


def _arm_push():
    to_goal = T.GoalDistance("object_goal_distance", body="object", goal=_PUSH_GOAL)
    return TaskFamily(
        name="ArmPush", model_file="arm_push.xml", frame_skip=4, horizon=150,
        observation=_ARM_OBS + (T.BodyPosition("object"),
                                T.TaskParameters(_PUSH_GOAL, hidden=True)),
        reward=(T.BodyDistance("fingertip_object_distance", "fingertip", "object", weight=-0.5),
                to_goal, _ARM_CTRL),
        termination=(T.NonFiniteState(),),
        # the goal lies 10 to 32 cm beyond the puck's start: every task needs a push
        parameters=(P.Uniform("goal_x", 0.5, 0.62), P.Uniform("goal_y", -0.3, 0.3),
                    P.Uniform("object_x", 0.3, 0.4), P.Uniform("object_y", -0.15, 0.15),
                    P.Uniform("object_mass", 0.1, 1.0), P.Uniform("object_friction", 0.3, 1.2)),
        writes=(T.WriteField("goal_x", "site_pos", "goal", 0),
                T.WriteField("goal_y", "site_pos", "goal", 1),
                T.WriteField("object_x", "qpos0", "object", 0),
                T.WriteField("object_y", "qpos0", "object", 1),
                T.WriteField("object_mass", "body_mass", "object"),
                T.WriteField("object_friction", "geom_friction", "object", 0)),
        success=T.Success(to_goal, 0.05), reset_qpos_noise=0.01, reset_qvel_noise=0.01,
        description="push a puck to a goal on the table; puck start, mass and friction vary; "
                    "success within 5 cm")


_TERRAIN_WORDS = "over rough ground, slopes, stairs or waves"
# (name suffix, reward terms, task parameters, description) of the terrain families' goals
_TERRAIN_GOALS = (
    ("Vel", (T.VelocityError("velocity", body="torso", goal="goal_velocity", weight=-1.0),),
     (P.Uniform("goal_velocity", 0.0, 2.0),),
     "walk at a goal velocity v* ~ U[0, 2] m/s " + _TERRAIN_WORDS),
    ("Dir", (T.ForwardVelocity("velocity", body="torso", direction="direction"),),
     (P.Choice("direction", (-1.0, 1.0)),),
     "walk forward (+1) or backward (-1) " + _TERRAIN_WORDS),
)
_terrain_families = [
    make(f"{robot}Terrain{suffix}",
         # the ant's velocity task keeps AntVel's offset of 1 per step; its direction task
         # gets the same 1 per step alive (ProMP's ant direction task has it too): without it,
         # on rough ground a policy that falls early loses nothing and walking is slow to learn
         reward + ((T.Constant("velocity_offset", 1.0),) if (robot, suffix) == ("Ant", "Vel")
                   else (T.Constant("alive_bonus", 1.0),) if (robot, suffix) == ("Ant", "Dir")
                   else ()),
         params, description)
    for robot, make in (("Ant", _terrain_ant), ("Walker2D", _terrain_walker))
    for suffix, reward, params, description in _TERRAIN_GOALS]

def _cheetah_servo():
    """HalfCheetahVel as a robot with joint position servos: targets 0.5 rad per action unit
    around qpos0, kp equal to each motor's gear (Nm/rad), kd a fortieth of it, the model's
    torque limits (gear x 1), a command delay of 0 to 30 ms (0 to 3 physics steps) and motor
    strength drawn per task, and noisy joint sensors."""
    gears = (120.0, 90.0, 60.0, 120.0, 60.0, 30.0)
    base = _FAMILIES["HalfCheetahVel"]
    return dataclasses.replace(
        base, name="HalfCheetahVelServo", normalize_actions=False,
        observation=(T.Qpos(1, noise=0.005), T.Qvel(noise=0.05), T.SubtreeCom("torso")),
        parameters=base.parameters + (P.ActuatorRange("strength", 0.8, 1.2),
                                      P.ActuatorRange("command_delay_ms", 0.0, 30.0)),
        actuators=T.Actuators("servo", kp=gears, kd=tuple(g / 40 for g in gears),
                              action_scale=0.5),
        description="HalfCheetahVel through PD position servos with a command delay of 0 to "
                    "30 ms and motor strength per task, and noisy joint sensors")


_LEGS = ("FR", "FL", "RR", "RL")
# the legged stacks' standing pose, in motor order: hip -0.1 right / +0.1 left, thigh 0.8
# front / 1.0 rear, calf -1.5 (envs/go2.xml's keyframe "home")
GO2_HOME = (-0.1, 0.8, -1.5, 0.1, 0.8, -1.5, -0.1, 1.0, -1.5, 0.1, 1.0, -1.5)
GO2_DT = 0.02  # s per policy step: 4 physics steps of 5 ms


def _go2_walk():
    """A Unitree Go2-class quadruped (envs/go2.xml) following velocity commands on PD servos,
    with unitree_rl_gym's gains, rates, observations and reward terms (their weights times
    the 0.02 s step, as legged_gym scales them); hidden per task: payload, centre-of-mass
    shift, ground friction, per-motor strength, kp and kd errors, command delay."""
    feet = tuple(f"{leg}_foot" for leg in _LEGS)
    limbs = tuple(f"{leg}_{part}" for leg in _LEGS for part in ("thigh", "calf"))
    return TaskFamily(
        name="Go2Walk", model_file="go2.xml", frame_skip=4, horizon=500,
        # episodes start with the base moving at up to 0.5 m/s and 0.5 rad/s about each axis
        # (legged_gym's reset): a policy that only stands falls, one that steps recovers
        init_keyframe="home", reset_qpos_noise=0.02, reset_qvel_noise=0.5,
        reset_noise="uniform",
        # what the robot's own sensors give: IMU gyroscope and orientation, joint encoders,
        # the operator's command and the last action; scales and noise as unitree_rl_gym's
        observation=(T.BodyAngularVelocity("base", noise=0.2, scale=0.25),
                     T.ProjectedGravity("base", noise=0.05),
                     T.Command(0, 2, scale=2.0), T.Command(2, 3, scale=0.25),
                     T.Qpos(7, noise=0.01, offset=GO2_HOME),
                     T.Qvel(6, noise=1.5, scale=0.05),
                     T.LastAction()),
        reward=(T.TrackLinearVelocity("tracking_lin_vel", "base", 0.25, 1.0 * GO2_DT),
                T.TrackYawRate("tracking_ang_vel", "base", 0.25, 0.5 * GO2_DT),
                T.BodyVelocityCost("lin_vel_z", "base", ("vz",), -2.0 * GO2_DT),
                T.BodyVelocityCost("ang_vel_xy", "base", ("wx", "wy"), -0.05 * GO2_DT),
                T.TorqueCost("torques", -2e-4 * GO2_DT),
                T.JointAccelerationCost("dof_acc", 6, -2.5e-7 * GO2_DT),
                T.ActionRateCost("action_rate", -0.01 * GO2_DT),
                T.JointLimitCost("dof_pos_limits", 0.9, -10.0 * GO2_DT),
                T.BodyContactCost("collision", limbs, 1.0, -1.0 * GO2_DT),
                T.FeetAirTime("feet_air_time", feet, 0.5, 0.1, 1.0, 1.0 * GO2_DT)),
        termination=(T.BodyContact(("base",)), T.Tilt("base", 60.0), T.NonFiniteState()),
        # legged_gym's only_positive_rewards: a fresh policy's penalties outweigh its
        # tracking rewards, and without the floor falling early pays
        reward_floor=0.0,
        motor_order=tuple(f"{leg}_{part}" for leg in _LEGS for part in ("hip", "thigh", "calf")),
        metrics=(T.VelocityTrackingError("tracking_error", "base"),
                 T.VelocityTrackingError("forward_error", "base", forward_only=True)),
        commands=T.Commands(("vx", "vy", "yaw_rate"), (-1.0, -0.5, -1.0), (1.0, 0.5, 1.0),
                            resample_steps=250),
        parameters=(P.Uniform("payload", 0.0, 3.0), P.Uniform("com_shift_x", -0.05, 0.05),
                    P.Uniform("friction", 0.4, 1.25),
                    P.ActuatorRange("strength", 0.6, 1.1, motors=12),
                    P.ActuatorRange("kp", 20.0, 30.0), P.ActuatorRange("kd", 0.4, 0.6),
                    P.ActuatorRange("command_delay_ms", 0.0, 20.0)),
        writes=(T.WriteField("payload", "body_mass", "base", add=True),
                T.WriteField("com_shift_x", "body_ipos", "base", 0, add=True))
        + tuple(T.WriteField("friction", "geom_friction", foot) for foot in feet),
        actuators=T.Actuators("servo", kp=25.0, kd=0.5, action_scale=0.25,
                              default_pose=GO2_HOME,
                              saturation_torque=(23.7, 23.7, 45.43) * 4,
                              max_velocity=(30.1, 30.1, 20.07) * 4),
        description="a Go2-class quadruped follows velocity commands (vx, vy, yaw rate, "
                    "changed every 5 s) through PD servos at 200 Hz; per task a payload of "
                    "0-3 kg, its centre-of-mass shift, ground friction, motor strength per "
                    "motor, kp/kd errors and a command delay of 0-20 ms")


def _go2_walk_terrain(walk: TaskFamily) -> TaskFamily:
    """Go2Walk on a terrain per task (rough ground, slopes, stairs, waves; flat where it
    starts), blind as Go2Walk (the same observation), so that a Go2Walk controller runs on it."""
    return dataclasses.replace(
        walk, name="Go2WalkTerrain", model_file="go2_terrain.xml",
        parameters=walk.parameters + (Terrain(),),
        description="Go2Walk on rough ground, slopes, stairs or waves (a terrain per task), "
                    "without a height scan")


def _go2_walk_nominal(walk: TaskFamily) -> TaskFamily:
    """Go2Walk with the robot close to its nominal build (no payload to speak of, motors within
    5 %, gains within 2.5 %, at most 5 ms of delay): a curriculum's first stage, whose
    controller starts Go2Walk's training (train --init), and a check of the learner on the
    robot without its variations. The same observation, actions and rewards as Go2Walk."""
    return dataclasses.replace(
        walk, name="Go2WalkNominal",
        parameters=(P.Uniform("payload", 0.0, 0.5), P.Uniform("com_shift_x", -0.01, 0.01),
                    P.Uniform("friction", 0.8, 1.25),
                    P.ActuatorRange("strength", 0.95, 1.05, motors=12),
                    P.ActuatorRange("kp", 24.5, 25.5), P.ActuatorRange("kd", 0.49, 0.51),
                    P.ActuatorRange("command_delay_ms", 0.0, 5.0)),
        description="Go2Walk close to the nominal robot: payload 0-0.5 kg, motor strength "
                    "0.95-1.05, kp/kd within 2.5 %, command delay 0-5 ms (a curriculum's "
                    "first stage)")


_GO2_WALK = _go2_walk()
for _family in (*_terrain_families, _arm_reach(), _arm_push(), _cheetah_servo(), _GO2_WALK,
                _go2_walk_nominal(_GO2_WALK), _go2_walk_terrain(_GO2_WALK)):
    _FAMILIES[_family.name] = _family


def list_families() -> List[str]:
    """Names of all task families."""
    return sorted(_FAMILIES)


def make_family(name: str, **overrides: Any) -> TaskFamily:
    """The family called name, with documented fields overridden (see TaskFamily)."""
    if isinstance(name, TaskFamily):
        return name.with_overrides(**overrides) if overrides else name
    if name not in _FAMILIES:
        raise ValueError(f"unknown task family {name!r}; known: {list_families()}")
    family = _FAMILIES[name]
    return family.with_overrides(**overrides) if overrides else family


_BUILT_IN = frozenset(_FAMILIES)


def register_family(family: TaskFamily, replace: bool = False) -> None:
    """Adds a family of the caller's to make_family and list_families. A name already taken
    (a built-in family's, or one registered before) is refused unless replace=True."""
    if not isinstance(family, TaskFamily):
        raise ValueError(f"expected a TaskFamily, got {type(family).__name__}")
    if not isinstance(replace, bool):
        raise ValueError(f"replace should be True or False, got {replace!r}")
    if family.name in _FAMILIES and not replace:
        kind = "a built-in family" if family.name in _BUILT_IN else "a registered family"
        raise ValueError(f"{family.name!r} is already {kind}; pass replace=True to replace it, "
                         f"or give yours another name (dataclasses.replace(family, name=...))")
    _FAMILIES[family.name] = family
