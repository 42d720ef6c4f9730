"""Go2Walk and the legged terms it is written in, against a plain mj_step loop written from the
terms' documentation (the servo law, the command ring, IMU-like observations, velocity commands
drawn and resampled from each simulation's stream, legged_gym's reward terms, base-contact
and tilt terminations): observations, rewards and terminations bit for bit."""

import dataclasses
import json
import math

import mujoco
import numpy as np
import pytest
import torch

import metarobot
from metarobot import actuators
from metarobot import terms as T
from metarobot.families import GO2_HOME
from test_actuators import Rng

LEGS = ("FR", "FL", "RR", "RL")
SAT = (23.7, 23.7, 45.43) * 4
WMAX = (30.1, 30.1, 20.07) * 4


def short_family(resample=7, horizon=40, reward_floor=0.0):
    """Go2Walk with short episodes and quick command changes, so that a short test sees
    resampling, resets and every term at work."""
    base = metarobot.make_family("Go2Walk")
    return dataclasses.replace(base, horizon=horizon, reward_floor=reward_floor,
                               commands=dataclasses.replace(base.commands,
                                                            resample_steps=resample))


class PlainGo2:
    """One Go2Walk simulation in a plain loop of mj_step, from the documentation."""

    def __init__(self, family, task, model, rng):
        self.f, self.m, self.rng, self.task = family, model, rng, task
        self.d = mujoco.MjData(model)
        self.base = model.body("base").id
        self.feet = [model.body(f"{leg}_foot").id for leg in LEGS]
        self.limbs = [model.body(f"{leg}_{part}").id for leg in LEGS
                      for part in ("thigh", "calf")]
        self.kp, self.kd = task["kp"], task["kd"]
        self.strength = [task[f"strength[{i}]"] for i in range(12)]
        self.delay = actuators.delay_steps(task["command_delay_ms"], model.opt.timestep)
        self.effort = model.actuator_ctrlrange[:, 1].tolist()
        self.dof = [model.jnt_dofadr[model.actuator_trnid[i, 0]] for i in range(12)]
        self.qadr = [model.jnt_qposadr[model.actuator_trnid[i, 0]] for i in range(12)]
        self.dt = family.frame_skip * model.opt.timestep
        self.cmd_lo, self.cmd_hi = family.commands.low, family.commands.high

    def draw_command(self):
        self.command = [lo + (hi - lo) * self.rng.uniform()
                        for lo, hi in zip(self.cmd_lo, self.cmd_hi)]

    def forward(self):
        mujoco.mj_forward(self.m, self.d)
        mujoco.mj_rnePostConstraint(self.m, self.d)

    def reset(self):
        m, d = self.m, self.d
        mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
        # Go2Walk's reset: uniform noise, +-0.02 on every qpos, +-0.5 on every qvel
        assert self.f.reset_noise == "uniform"
        for i in range(m.nq):
            d.qpos[i] += self.f.reset_qpos_noise * (2 * self.rng.uniform() - 1)
        for i in range(m.nv):
            d.qvel[i] += self.f.reset_qvel_noise * (2 * self.rng.uniform() - 1)
        self.draw_command()
        self.last_action = [0.0] * 12
        self.air = [0.0] * 4
        self.touched = [False] * 4
        self.targets = []
        self.t = 0
        self.forward()
        return self.observe()

    def velocity(self, body):
        v = np.zeros(6)
        # the body's own frame (XBODY), not its inertial frame
        mujoco.mj_objectVelocity(self.m, self.d, mujoco.mjtObj.mjOBJ_XBODY, body, v, 1)
        return v.tolist()

    def force(self, body):
        return math.sqrt(sum(x * x for x in self.d.cfrc_ext[body, 3:]))

    def observe(self):
        d, rng = self.d, self.rng

        def read(values, noise, scale=1.0, offset=None):
            out = []
            for i, v in enumerate(values):
                if offset is not None:
                    v -= offset[i]
                if noise > 0:
                    v += noise * rng.normal()
                out.append(scale * v)
            return out
        xmat = d.xmat[self.base]
        obs = (read(self.velocity(self.base)[:3], 0.2, 0.25)
               + read([-xmat[6], -xmat[7], -xmat[8]], 0.05)
               + read(self.command[:2], 0.0, 2.0) + read(self.command[2:3], 0.0, 0.25)
               + read(d.qpos[7:].tolist(), 0.01, 1.0, GO2_HOME)
               + read(d.qvel[6:].tolist(), 1.5, 0.05)
               + read(self.last_action, 0.0))
        return np.array(obs, np.float32)

    def outside_soft_limits(self):
        """legged_gym's dof_pos_limits: how far each joint is outside the middle 90 % of its
        range, summed over the 12 joints (rad)."""
        total = 0.0
        for i in range(12):
            lo, hi = (float(x) for x in self.m.jnt_range[self.m.actuator_trnid[i, 0]])
            mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo) * 0.9
            q = float(self.d.qpos[self.qadr[i]])
            total += max(0.0, (mid - half) - q) + max(0.0, q - (mid + half))
        return total

    def step(self, action):
        m, d = self.m, self.d
        action = [float(a) for a in action]
        n = len(self.targets)
        self.targets.append([GO2_HOME[i] + 0.25 * action[i] for i in range(12)])
        qvel_before = d.qvel.tolist()
        for j in range(self.f.frame_skip):
            k = n * self.f.frame_skip + j
            target = self.targets[(k - self.delay) // self.f.frame_skip] \
                if k >= self.delay else GO2_HOME
            for i in range(12):
                q, w = float(d.qpos[self.qadr[i]]), float(d.qvel[self.dof[i]])
                tau = self.strength[i] * (self.kp * (target[i] - q) - self.kd * w) + 0.0
                envelope = SAT[i] * (1.0 - abs(w) / WMAX[i])
                limit = min(self.effort[i], max(envelope, 0.0))
                d.qfrc_applied[self.dof[i]] = min(max(tau, -limit), limit)
            mujoco.mj_step(m, d)
        self.forward()
        self.t += 1
        # feet: down now or at the last step after time in the air is a landing
        c = self.command
        air_reward = 0.0
        for k, foot in enumerate(self.feet):
            contact = self.force(foot) > 1.0
            touching = contact or self.touched[k]
            self.touched[k] = contact
            landed = self.air[k] > 0 and touching
            self.air[k] += self.dt
            if landed:
                air_reward += self.air[k] - 0.5
            if touching:
                self.air[k] = 0.0
        if not math.sqrt(c[0] * c[0] + c[1] * c[1]) > 0.1:
            air_reward = 0.0
        v = self.velocity(self.base)
        acc = [(d.qvel[i] - qvel_before[i]) / self.dt for i in range(6, 18)]
        values = [
            (0.02, math.exp(-((c[0] - v[3]) ** 2 + (c[1] - v[4]) ** 2) / 0.25)),
            (0.01, math.exp(-((c[2] - v[2]) ** 2) / 0.25)),
            (-0.04, v[5] * v[5]),
            (-0.001, v[0] * v[0] + v[1] * v[1]),
            (-4e-6, sum(float(d.qfrc_applied[i]) ** 2 for i in self.dof)),
            (-5e-9, sum(a * a for a in acc)),
            (-0.0002, sum((a - b) ** 2 for a, b in zip(action, self.last_action))),
            (-0.2, self.outside_soft_limits()),
            (-0.02, float(sum(self.force(b) > 1.0 for b in self.limbs))),
            (0.02, air_reward)]
        reward = 0.0
        for weight, value in values:
            reward += weight * value
        self.floored = self.f.reward_floor is not None and reward < self.f.reward_floor
        if self.floored:
            reward = self.f.reward_floor
        terminated = (self.force(self.base) > 1.0
                      or not d.xmat[self.base][8] >= math.cos(math.radians(60.0))
                      or not np.all(np.isfinite(d.qpos)))
        ex, ey = c[0] - v[3], c[1] - v[4]
        self.metrics = np.array([math.sqrt(ex * ex + ey * ey), math.sqrt(ex * ex + 0.0 * 0.0)],
                                np.float32)
        self.last_action = action
        if self.t % self.f.commands.resample_steps == 0:
            self.draw_command()
        return self.observe(), np.float32(reward), terminated


def test_weights_are_legged_gyms_times_the_policy_step():
    """The reference above spells the weights out; they are unitree_rl_gym's times 0.02 s."""
    family = metarobot.make_family("Go2Walk")
    weights = [t.weight for t in family.reward]
    np.testing.assert_allclose(weights, [0.02, 0.01, -0.04, -0.001, -4e-6, -5e-9, -0.0002,
                                         -0.2, -0.02, 0.02], rtol=1e-12)
    assert family.reward_floor == 0.0  # legged_gym's only_positive_rewards
    assert family.frame_skip * family.load_model().opt.timestep == pytest.approx(0.02)


@pytest.mark.parametrize("floor", [None, -0.05])
def test_go2walk_matches_a_plain_mj_step_loop_bit_for_bit(floor):
    """floor: the sums of the terms as they are, and with a floor that random actions'
    rewards fall below at some steps and not at others (Go2Walk's own floor, 0, is below
    nearly all of them)."""
    family = short_family(reward_floor=floor)
    tasks = family.sample_tasks(3, seed=3)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=11, num_threads=2)
    plains = [PlainGo2(family, tasks[sim.task_index[i]], sim.models[sim.task_index[i]],
                       Rng(11, i)) for i in range(sim.num_envs)]
    obs = sim.reset()
    for i, plain in enumerate(plains):
        np.testing.assert_array_equal(obs[i], plain.reset())
    assert len({p.delay for p in plains}) > 1
    rng = np.random.default_rng(0)
    seen = {"resampled": 0, "ended": 0, "landed": 0, "terminated": 0, "off_limits": 0,
            "floored": 0, "above": 0}
    # the first two simulations fold their thighs up (targets 2 rad past the standing pose)
    # and drop onto the base: terminations and resets
    fold = np.zeros((sim.num_envs, 12))
    fold[:2, 1::3] = 8.0
    for t in range(90):
        actions = rng.uniform(-1.5, 1.5, (sim.num_envs, 12)) + fold
        obs, reward, term, trunc, info = sim.step(actions)
        for i, plain in enumerate(plains):
            before = list(plain.command)
            expected, expected_reward, expected_term = plain.step(actions[i])
            seen["resampled"] += plain.command != before
            seen["landed"] += any(plain.touched) and plain.t > 1
            seen["off_limits"] += plain.outside_soft_limits() > 0
            seen["floored"] += plain.floored
            seen["above"] += not plain.floored
            where = f"step {t}, sim {i}"
            assert bool(term[i]) == expected_term, where
            assert reward[i] == expected_reward, where
            np.testing.assert_array_equal(info["metrics"][i], plain.metrics, err_msg=where)
            if term[i] or trunc[i]:
                seen["ended"] += 1
                seen["terminated"] += bool(term[i])
                np.testing.assert_array_equal(info["final_obs"][i], expected, where)
                expected = plain.reset()
            np.testing.assert_array_equal(obs[i], expected, err_msg=where)
    assert seen["resampled"] > 0 and seen["ended"] > 0 and seen["landed"] > 0
    assert seen["terminated"] > 0 and seen["off_limits"] > 0
    assert seen["above"] > 0 and (floor is None or seen["floored"] > 0), seen


def test_rollouts_match_steps_and_any_thread_count_or_split():
    family = short_family(resample=5, horizon=30)
    tasks = family.sample_tasks(4, seed=1)
    torch.manual_seed(0)
    policy = metarobot.GaussianMLPPolicy(family.observation_dim(), 12, (16,))

    def rollout(tasks, threads, first_stream=0):
        sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=5,
                                 num_threads=threads, first_stream=first_stream)
        return sim.rollout(policy, horizon=30)
    one, two = rollout(tasks, 1), rollout(tasks, 2)
    first, second = rollout(tasks[:2], 2), rollout(tasks[2:], 1, first_stream=4)
    for name in ("observations", "actions", "rewards", "terminated", "valid", "metrics"):
        a = getattr(one, name)
        np.testing.assert_array_equal(a, getattr(two, name))
        np.testing.assert_array_equal(
            a, np.concatenate([getattr(first, name), getattr(second, name)], axis=1))
    # the rollout's policy-in-the-loop path against plain steps with its own actions
    sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=5, num_threads=2)
    plains = [PlainGo2(family, tasks[sim.task_index[i]], sim.models[sim.task_index[i]],
                       Rng(5, i)) for i in range(sim.num_envs)]
    for i, plain in enumerate(plains):
        np.testing.assert_array_equal(one.observations[0, i], plain.reset())
        for t in range(int(one.lengths[i])):
            for _ in range(12):
                plain.rng.normal()  # the policy's exploration noise, drawn in the core first
            obs, reward, term = plain.step(one.actions[t, i].astype(np.float64))
            assert one.rewards[t, i] == reward, f"step {t}, sim {i}"
            np.testing.assert_array_equal(one.metrics[t, i], plain.metrics)
            nxt = one.observations[t + 1, i] if t + 1 < 30 else one.final_observations[i]
            if t + 1 < one.lengths[i] or t + 1 == 30:
                np.testing.assert_array_equal(nxt, obs, err_msg=f"step {t}, sim {i}")


def test_task_parameters_reach_the_model():
    """Payload and centre-of-mass shift add to the base's own values; friction is the feet's
    (their priority makes theirs the contact's)."""
    family = metarobot.make_family("Go2Walk")
    base_model = family.load_model()
    task = family.sample_tasks(1, seed=8)[0]
    model = family.task_model(base_model, task)
    base = model.body("base").id
    assert model.body_mass[base] == pytest.approx(base_model.body_mass[base] + task["payload"])
    assert model.body_ipos[base, 0] == pytest.approx(base_model.body_ipos[base, 0]
                                                     + task["com_shift_x"])
    for leg in LEGS:
        geom = model.geom(f"{leg}_foot")
        assert geom.friction[0] == pytest.approx(task["friction"])
        assert geom.priority[0] > model.geom("floor").priority[0]
    assert sum(model.body_mass) == pytest.approx(sum(base_model.body_mass) + task["payload"])


def test_observation_terms_read_what_an_imu_and_encoders_would():
    """Projected gravity of a robot rolled by 30 degrees, its gyroscope in its own frame, and
    joints relative to the standing pose."""
    family = dataclasses.replace(
        metarobot.make_family("Go2Walk"), reset_qpos_noise=0.0, reset_qvel_noise=0.0,
        observation=(T.ProjectedGravity("base"), T.BodyAngularVelocity("base"),
                     T.Qpos(7, offset=GO2_HOME), T.Command(0, 3), T.LastAction()))
    task = family.task(**{n: 1.0 if n.startswith("strength") else 25.0 if n == "kp" else
                          0.5 if n == "kd" else 0.8 if n == "friction" else 0.0
                          for n in family.parameter_names})
    sim = metarobot.BatchSim(family, [task], seed=0)
    sim.reset()
    qpos, qvel = sim.get_state()
    roll = math.radians(30)
    qpos[0, 3:7] = [math.cos(roll / 2), math.sin(roll / 2), 0, 0]  # about x
    qvel[0, :] = 0
    qvel[0, 3:6] = [0.0, 0.0, 1.0]  # yaw rate in the base's frame (free joint: local)
    obs = sim.set_state(qpos, qvel)[0]
    np.testing.assert_allclose(obs[:3], [0, -math.sin(roll), -math.cos(roll)], atol=1e-6)
    np.testing.assert_allclose(obs[3:6], [0, 0, 1.0], atol=1e-6)
    np.testing.assert_allclose(obs[6:18], qpos[0, 7:] - np.array(GO2_HOME), atol=1e-6)
    lo, hi = family.commands.low, family.commands.high
    assert all(lo[i] <= obs[18 + i] <= hi[i] for i in range(3))
    np.testing.assert_array_equal(obs[21:], 0.0)  # no action yet


@pytest.mark.parametrize("term, message", [
    (T.BodyContactCost("c", ()), "non-empty sequence of body names"),
    (T.BodyContactCost("c", ("nobody",)), "no body 'nobody'"),
    (T.BodyVelocityCost("v", "base", ("vq",)), "components should be"),
    (T.TrackLinearVelocity("t", "base", sigma=0.0), "sigma should be > 0"),
    (T.Tilt("base", 0.0), "max_degrees should be in"),
    (T.JointLimitCost("l", soft=1.5), "soft should be in"),
])
def test_bad_terms_are_refused_naming_what_was_expected(term, message):
    family = metarobot.make_family("Go2Walk")
    where = "termination" if isinstance(term, T.Tilt) else "reward"
    bad = dataclasses.replace(family, **{where: (term,)})
    with pytest.raises(ValueError, match=message):
        metarobot.BatchSim(bad, family.sample_tasks(1, seed=0))


def test_tracking_terms_need_commands():
    family = dataclasses.replace(metarobot.make_family("Go2Walk"), commands=None,
                                 observation=(T.LastAction(),))
    with pytest.raises(ValueError, match="commands"):
        metarobot.BatchSim(family, family.sample_tasks(1, seed=0))
    with pytest.raises(ValueError, match="empty"):
        T.Commands(("vx",), (1.0,), (0.0,))


def test_episode_measures_average_valid_steps_per_task_and_count_falls_per_minute():
    """Two tasks of two simulations, 4 steps of 0.02 s: hand-counted means and falls."""
    from metarobot.batch import Trajectories
    from metarobot.samples import TERMINATIONS, episode_measures
    valid = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 0, 1]], bool)  # (T, N)
    terminated = np.zeros((4, 4), bool)
    terminated[1, 0] = terminated[2, 2] = True  # sim 0 (task 0) and sim 2 (task 1) fall
    metrics = np.zeros((4, 4, 1), np.float32)
    metrics[..., 0] = np.arange(16, dtype=np.float32).reshape(4, 4)
    metrics[~valid] = 100.0  # must not count
    traj = Trajectories(
        observations=np.zeros((4, 4, 1), np.float32), actions=np.zeros((4, 4, 1), np.float32),
        rewards=np.zeros((4, 4), np.float32), terminated=terminated,
        truncated=np.zeros((4, 4), bool), valid=valid,
        final_observations=np.zeros((4, 1), np.float32), lengths=valid.sum(0),
        diverged=np.zeros(4, bool), task_index=np.array([0, 0, 1, 1]), tasks=(),
        metrics=metrics)
    out = episode_measures(traj, 2, ["err"], 0.02, terminations=True)
    # task 0: sims 0 (steps 0, 1) and 1 (steps 0-3): values 0, 4, 1, 5, 9, 13
    # task 1: sims 2 (steps 0-2) and 3 (steps 0-3): values 2, 6, 10, 3, 7, 11, 15
    np.testing.assert_allclose(out["err"], [32 / 6, 54 / 7])
    np.testing.assert_allclose(out[TERMINATIONS], [1 / (6 * 0.02 / 60), 1 / (7 * 0.02 / 60)])


def test_evaluate_reports_tracking_error_and_falls_per_step(tmp_path, capsys):
    """A Go2Walk checkpoint's evaluation carries the family's measures after each step."""
    from metarobot.cli import main
    run = tmp_path / "go2"
    assert main(["train", "--family", "Go2Walk", "--algo", "trpo", "--iterations", "1",
                 "--meta-batch-size", "2", "--trajectories-per-task", "2", "--set",
                 "horizon=25", "--hidden-sizes", "8", "--out", str(run),
                 "--quiet"]) == 0
    from metarobot.evaluation import evaluate
    result = evaluate(run, tasks=3, steps=1, trajectories=2)
    measures = result["measures"]
    assert set(measures) == {"tracking_error", "forward_error", "terminations_per_minute"}
    for name, values in measures.items():
        assert len(values["mean"]) == len(values["stderr"]) == 2, name
    err = measures["tracking_error"]["mean"]
    assert all(0.0 < e < 3.0 for e in err)  # m/s, commands within +-1 m/s
    assert all(f <= e + 1e-6 for f, e in zip(measures["forward_error"]["mean"], err))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--trajectories",
                 "2"]) == 0
    assert "tracking_error" in capsys.readouterr().out
    # the controller on video: 0.4 s at 10 frames per second, with its command written on it
    gif = tmp_path / "go2.gif"
    assert main(["video", str(run), "--out", str(gif), "--seconds", "0.4", "--fps", "10",
                 "--width", "96", "--height", "64", "--task", json.dumps(
                     {"payload": 1.0, "com_shift_x": 0.0, "friction": 0.8, "strength": 0.9,
                      "kp": 25.0, "kd": 0.5, "command_delay_ms": 0.0})]) == 0
    from PIL import Image
    with Image.open(gif) as image:
        assert (image.n_frames, image.size) == (4, (96, 64))
    assert main(["video", str(run), "--out", str(gif), "--task", '{"strength": [1, 2]}']) == 2


@pytest.mark.parametrize("floor", ["0", float("nan"), True])
def test_a_bad_reward_floor_is_refused(floor):
    with pytest.raises(ValueError, match="reward_floor should be a finite number or None"):
        metarobot.make_family("Go2Walk", reward_floor=floor)


def test_evaluate_gives_the_plain_loops_rewards_for_outside_states():
    """BatchSim.evaluate, the reward of a robot's measured steps: fed the plain loop's states,
    actions, commands and final torques, it gives the plain loop's rewards, terminations and
    metrics bit for bit (the engine's own stepping plays no part). Commands change within the run and
    the feet land, so the carry (last action, air time) is at work."""
    family = short_family(resample=7, horizon=1000)
    task = family.sample_tasks(1, seed=5)[0]
    evaluator = metarobot.BatchSim(family, [task], seed=0, autoreset=False)
    plain = PlainGo2(family, task, evaluator.models[0], Rng(4, 0))
    plain.reset()
    evaluator.reset()
    rng = np.random.default_rng(2)
    landed = commands = 0
    for t in range(60):
        action = rng.uniform(-1.0, 1.0, 12)
        before = (plain.d.qpos.copy()[None], plain.d.qvel.copy()[None])
        command, air = list(plain.command), list(plain.air)
        _, expected, expected_term = plain.step(action)
        torques = np.array([plain.d.qfrc_applied[i] for i in plain.dof])[None]
        reward, term, metrics = evaluator.evaluate(
            before, (plain.d.qpos.copy()[None], plain.d.qvel.copy()[None]), action[None],
            commands=np.array([command]), torques=torques)
        where = f"step {t}"
        assert reward[0] == expected, where
        assert bool(term[0]) == expected_term, where
        np.testing.assert_array_equal(metrics[0], plain.metrics, err_msg=where)
        # a landing: a foot that was in the air has its air time counted and reset
        landed += any(a > 0 and b == 0 for a, b in zip(air, plain.air))
        commands += plain.command != command
        if expected_term:
            break
    assert landed > 0 and commands > 0


def test_evaluate_refuses_bad_input_before_any_work():
    family = metarobot.make_family("Go2Walk")
    sim = metarobot.BatchSim(family, family.sample_tasks(1, seed=0), autoreset=False)
    qpos, qvel = sim.get_state()
    with pytest.raises(RuntimeError, match="reset"):
        sim.evaluate((qpos, qvel), (qpos, qvel), np.zeros((1, 12)))
    sim.reset()
    with pytest.raises(ValueError, match=r"commands should have shape \(1, 3\)"):
        sim.evaluate((qpos, qvel), (qpos, qvel), np.zeros((1, 12)), commands=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="qpos should be finite"):
        bad = qpos.copy()
        bad[0, 3] = np.nan
        sim.evaluate((qpos, qvel), (bad, qvel), np.zeros((1, 12)))
    cheetah = metarobot.BatchSim("HalfCheetahVel",
                                 metarobot.make_family("HalfCheetahVel").sample_tasks(1, 0))
    cheetah.reset()
    q, v = cheetah.get_state()
    with pytest.raises(ValueError, match="no commands"):
        cheetah.evaluate((q, v), (q, v), np.zeros((1, 6)), commands=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="servo families"):
        cheetah.evaluate((q, v), (q, v), np.zeros((1, 6)), torques=np.zeros((1, 6)))


def test_evaluate_without_torques_is_with_zero_torques():
    """torques=None is none at all, not the previous call's (no floor: the torque term shows)."""
    family = short_family(reward_floor=None)
    task = family.sample_tasks(1, seed=1)[0]
    sims = [metarobot.BatchSim(family, [task], autoreset=False) for _ in range(2)]
    for sim in sims:
        sim.reset()
    state = sims[0].get_state()
    action = np.full((1, 12), 0.3)
    torque = np.full((1, 12), 30.0)
    with_torques, _, _ = sims[0].evaluate(state, state, action, torques=torque)
    none, _, _ = sims[0].evaluate(state, state, action)
    zeros, _, _ = sims[1].evaluate(state, state, action, torques=np.zeros((1, 12)))
    zeros2, _, _ = sims[1].evaluate(state, state, action, torques=np.zeros((1, 12)))
    assert none[0] == zeros2[0] and with_torques[0] != zeros[0]


def test_evaluate_gives_the_engines_own_rewards_for_a_torque_family():
    """HalfCheetahVel (the model's own motors, no delay): evaluate on the states a simulation
    went through, with its actions, gives that simulation's rewards bit for bit."""
    family = metarobot.make_family("HalfCheetahVel")
    tasks = family.sample_tasks(3, seed=2)
    sim = metarobot.BatchSim(family, tasks, seed=3, autoreset=False)
    evaluator = metarobot.BatchSim(family, tasks, seed=4, autoreset=False)
    sim.reset()
    evaluator.reset()
    rng = np.random.default_rng(5)
    for t in range(20):
        before = sim.get_state()
        actions = rng.uniform(-1, 1, (3, 6))
        _, reward, term, _, _ = sim.step(actions)
        got, got_term, _ = evaluator.evaluate(before, sim.get_state(), actions)
        np.testing.assert_array_equal(got, reward, err_msg=f"step {t}")
        np.testing.assert_array_equal(got_term, term)
