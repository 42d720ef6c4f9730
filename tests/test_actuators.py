"""Actuators in the core (PD servos, torque and speed limits, command delay, noisy and delayed
sensors) against a plain Python mj_step loop that computes the same law, step for step and bit
for bit; determinism across threads and batch splits; errors for bad settings."""

import dataclasses
import math

import mujoco
import numpy as np
import pytest
import torch

import metarobot
import reference as ref
from metarobot import _core, actuators
from metarobot import parameters as P
from metarobot import terms as T

# A small arm: a hinge, a limited slide and a second hinge, under gravity, each driven by a
# plain motor (the servos replace them). Timestep 2 ms: a delay of 2k ms is k physics steps.
ARM_XML = """
<mujoco>
  <option timestep="0.002"/>
  <worldbody>
    <body name="upper" pos="0 0 1">
      <joint name="shoulder" type="hinge" axis="0 1 0" damping="0.05"/>
      <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03" mass="1"/>
      <body name="slider" pos="0.3 0 0">
        <joint name="extend" type="slide" axis="1 0 0" range="-0.1 0.1" limited="true"/>
        <geom type="box" size="0.04 0.04 0.04" mass="0.5"/>
        <body name="lower" pos="0.05 0 0">
          <joint name="elbow" type="hinge" axis="0 1 0"/>
          <geom type="capsule" fromto="0 0 0 0.25 0 0" size="0.025" mass="0.4"/>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor joint="shoulder" gear="1" ctrlrange="-6 6" ctrllimited="true"/>
    <motor joint="extend" gear="2" ctrlrange="-10 10" ctrllimited="true"/>
    <motor joint="elbow" gear="1"/>
  </actuator>
</mujoco>
"""

SERVO = dict(kind="servo", default_pose=(0.3, 0.02, -0.4), action_scale=(0.6, 0.05, 0.8),
             kd=0.2, feedforward=(0.3, -0.5, 0.0), effort_limit=(4.0, 15.0, 1.5),
             saturation_torque=(5.0, 30.0, 2.5), max_velocity=(6.0, 2.0, 9.0))


@pytest.fixture
def arm_path(tmp_path):
    path = tmp_path / "arm.xml"
    path.write_text(ARM_XML)
    return str(path)


def arm_family(path, *, frame_skip=4, delay_ms=0.0, task_delay=None, **servo):
    """The arm with servos whose kp and strength are drawn per motor and per task, kd and
    the noise scale per task; sensors noisy, joint velocities also 2 physics steps late."""
    params = (P.ActuatorRange("kp", 15.0, 60.0, motors=3),
              P.ActuatorRange("strength", 0.7, 1.3, motors=3),
              P.ActuatorRange("kd", 0.1, 0.6),
              P.ActuatorRange("noise_scale", 0.5, 1.5))
    if task_delay is not None:
        params += (P.ActuatorRange("command_delay_ms", *task_delay),)
    return metarobot.TaskFamily(
        name="ServoArm", model_file=path, frame_skip=frame_skip, horizon=1000,
        observation=(T.Qpos(noise=0.01), T.Qvel(clip=3.0, noise=0.2, delay=2),
                     T.BodyPosition("lower", noise=0.005)),
        reward=(T.ControlCost("ctrl_cost", weight=-0.1),), termination=(),
        parameters=params, reset_qpos_noise=0.05, reset_qvel_noise=0.1,
        actuators=T.Actuators(**dict(SERVO, delay_ms=delay_ms, **servo)))


# ------------------------------------------------------------------------- the plain reference

MASK = (1 << 64) - 1


class Rng:
    """csrc/rng.h written out: xoshiro256** seeded by splitmix64 from (seed, stream), uniform
    from 53 bits, normal by Box-Muller with the spare kept."""

    def __init__(self, seed, stream):
        x, out = self._splitmix(seed)
        mix = out ^ ((stream * 0xD1B54A32D192ED03) & MASK)
        self.s = []
        for _ in range(4):
            mix, out = self._splitmix(mix)
            self.s.append(out)
        self.spare = None

    @staticmethod
    def _splitmix(x):
        x = (x + 0x9E3779B97F4A7C15) & MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return x, z ^ (z >> 31)

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & MASK

    def next(self):
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def uniform(self):
        return (float(self.next() >> 11) + 0.5) * 2.0 ** -53

    def normal(self):
        if self.spare is not None:
            value, self.spare = self.spare, None
            return value
        r = math.sqrt(-2.0 * math.log(self.uniform()))
        phi = 6.283185307179586 * self.uniform()
        self.spare = r * math.sin(phi)
        return r * math.cos(phi)


class PlainServoSim:
    """One simulation of the arm family in a plain mj_step loop: the PD law, limits, command
    ring, per-episode delay draw, sensor noise and sensor delay written out from the
    Actuators documentation, with the simulation's own random stream."""

    def __init__(self, family, task, model, rng, servo, delay_range):
        self.f, self.m, self.rng = family, model, rng
        self.d = mujoco.MjData(model)
        values = task.as_dict()
        self.kp = [values[f"kp[{i}]"] for i in range(3)]
        self.strength = [values[f"strength[{i}]"] for i in range(3)]
        self.kd = [values["kd"]] * 3
        self.noise_scale = values["noise_scale"]
        self.servo = servo
        self.delay_range = delay_range
        self.qpos_adr = [model.jnt_qposadr[model.actuator_trnid[i, 0]] for i in range(3)]
        self.dof_adr = [model.jnt_dofadr[model.actuator_trnid[i, 0]] for i in range(3)]
        self.limited = self.enveloped = 0  # physics steps a limit cut the torque

    def reset(self):
        m, d = self.m, self.d
        mujoco.mj_resetData(m, d)
        for i in range(m.nq):
            d.qpos[i] += self.f.reset_qpos_noise * self.rng.normal()
        for i in range(m.nv):
            d.qvel[i] += self.f.reset_qvel_noise * self.rng.normal()
        lo, hi = self.delay_range
        self.delay = lo if hi <= lo else lo + min(int(self.rng.uniform() * (hi - lo + 1)),
                                                  hi - lo)
        self.commands = []
        self.history = [(d.qpos.copy(), d.qvel.copy())]  # state after each physics step
        return self.observe()

    def observe(self):
        full = ref.derived(self.m, self.d)
        k = len(self.history) - 1
        _, qvel_late = self.history[max(k - 2, 0)]
        out = []

        def noisy(values, sd):
            return [v + sd * self.rng.normal() if sd > 0 else v for v in values]
        out += noisy(self.d.qpos.tolist(), 0.01 * self.noise_scale)
        out += [min(max(v, -3.0), 3.0) for v in noisy(qvel_late.tolist(),
                                                       0.2 * self.noise_scale)]
        out += noisy(full.xpos[self.m.body("lower").id].tolist(), 0.005 * self.noise_scale)
        return np.array(out, np.float32)

    def step(self, action):
        s, m, d = self.servo, self.m, self.d
        n = len(self.commands)
        self.commands.append([s["default_pose"][i] + s["action_scale"][i] * float(action[i])
                              for i in range(3)])
        for j in range(self.f.frame_skip):
            k = n * self.f.frame_skip + j
            target = (self.commands[(k - self.delay) // self.f.frame_skip]
                      if k >= self.delay else s["default_pose"])
            for i in range(3):
                q, w = float(d.qpos[self.qpos_adr[i]]), float(d.qvel[self.dof_adr[i]])
                tau = (self.strength[i] * (self.kp[i] * (target[i] - q) - self.kd[i] * w)
                       + s["feedforward"][i])
                envelope = s["saturation_torque"][i] * (1.0 - abs(w) / s["max_velocity"][i])
                limit = min(s["effort_limit"][i], max(envelope, 0.0))
                self.limited += abs(tau) > limit
                self.enveloped += envelope < s["effort_limit"][i] and abs(tau) > envelope
                d.qfrc_applied[self.dof_adr[i]] = min(max(tau, -limit), limit)
            mujoco.mj_step(m, d)
            self.history.append((d.qpos.copy(), d.qvel.copy()))
        return self.observe()


@pytest.mark.parametrize("frame_skip, delay_ms, task_delay", [
    (1, 0.0, None),            # PD at the policy rate, no delay
    (4, 6.0, None),            # decimation 4, a fixed delay of 3 physics steps
    (3, (0.0, 14.0), None),    # 0..7 physics steps drawn per episode
    (4, 0.0, (0.0, 20.0)),     # 0..10 physics steps drawn per task
])
def test_servos_match_a_plain_mj_step_loop_bit_for_bit(arm_path, frame_skip, delay_ms,
                                                       task_delay):
    family = arm_family(arm_path, frame_skip=frame_skip, delay_ms=delay_ms,
                        task_delay=task_delay)
    tasks = family.sample_tasks(3, seed=2)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=7, num_threads=2)
    model = sim.models[0]
    dt_ms = 1000 * model.opt.timestep
    plains = []
    for i in range(sim.num_envs):
        task = tasks[sim.task_index[i]]
        if task_delay is not None:
            steps = actuators.delay_steps(task["command_delay_ms"], model.opt.timestep)
            delay_range = (steps, steps)
        else:
            low, high = delay_ms if isinstance(delay_ms, tuple) else (delay_ms, delay_ms)
            delay_range = (round(low / dt_ms), round(high / dt_ms))
        plains.append(PlainServoSim(family, task, model, Rng(7, i), SERVO, delay_range))
    obs = sim.reset()
    for i, plain in enumerate(plains):
        np.testing.assert_array_equal(obs[i], plain.reset())
    delays = {p.delay for p in plains}
    if isinstance(delay_ms, tuple) or task_delay is not None:
        assert len(delays) > 1, "the draws should give the simulations different delays"
    actions = 1.5 * np.random.default_rng(frame_skip).standard_normal((60, sim.num_envs, 3))
    for t in range(len(actions)):
        obs, reward, term, trunc, info = sim.step(actions[t])
        qpos, qvel = sim.get_state()
        for i, plain in enumerate(plains):
            expected = plain.step(actions[t, i])
            np.testing.assert_array_equal(qpos[i], plain.d.qpos, err_msg=f"step {t}, sim {i}")
            np.testing.assert_array_equal(qvel[i], plain.d.qvel, err_msg=f"step {t}, sim {i}")
            np.testing.assert_array_equal(obs[i], expected, err_msg=f"step {t}, sim {i}")
            # the control cost sees the action, not the torque
            assert reward[i] == np.float32(-0.1 * np.sum(np.square(actions[t, i])))
    # the effort limit and the torque-speed envelope both cut torques in this test
    assert sum(p.limited for p in plains) > 0
    assert sum(p.enveloped for p in plains) > 0


def test_rollout_with_the_policy_in_the_loop_matches_the_plain_loop(arm_path):
    """rollout() evaluates the policy in C++ and splits physics steps around the observation
    (mj_step1 / mj_step2); the servos' torques still follow the plain loop to the bit."""
    family = arm_family(arm_path, frame_skip=4, delay_ms=(0.0, 14.0))
    tasks = family.sample_tasks(2, seed=4)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=9, num_threads=2)
    torch.manual_seed(1)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim, (16,))
    traj = sim.rollout(policy, horizon=50)
    model = sim.models[0]
    for i in range(sim.num_envs):
        rng = Rng(9, i)
        plain = PlainServoSim(family, tasks[sim.task_index[i]], model, rng, SERVO, (0, 7))
        np.testing.assert_array_equal(traj.observations[0, i], plain.reset())
        for t in range(traj.lengths[i]):
            for _ in range(sim.action_dim):
                rng.normal()  # the policy's noise, drawn in the core before the step
            obs = plain.step(traj.actions[t, i].astype(np.float64))
            nxt = traj.observations[t + 1, i] if t + 1 < 50 else traj.final_observations[i]
            np.testing.assert_array_equal(nxt, obs, err_msg=f"step {t}, sim {i}")


def test_torque_family_with_a_command_delay_matches_a_plain_loop():
    """HalfCheetahVel's own motors, commands 0..30 ms late (0..3 steps) drawn per episode: the
    controls of action 0 until the first command arrives."""
    family = metarobot.make_family("HalfCheetahVel",
                                   actuators={"kind": "torque", "delay_ms": (0.0, 30.0)})
    tasks = family.sample_tasks(4, seed=0)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=3, num_threads=2)
    m = sim.models[0]
    obs = sim.reset()
    rngs = [Rng(3, i) for i in range(sim.num_envs)]
    datas, delays, commands = [], [], [[] for _ in range(sim.num_envs)]
    for rng in rngs:
        d = mujoco.MjData(m)
        for i in range(m.nq):
            d.qpos[i] += 0.01 * rng.normal()
        for i in range(m.nv):
            d.qvel[i] += 0.1 * rng.normal()
        delays.append(min(int(rng.uniform() * 4), 3))
        datas.append(d)
    assert len(set(delays)) > 1
    qpos, _ = sim.get_state()
    for i, d in enumerate(datas):
        np.testing.assert_array_equal(qpos[i], d.qpos)
    zero = ref.applied("HalfCheetahVel", m, np.zeros(6))
    actions = np.random.default_rng(1).uniform(-1.2, 1.2, (30, sim.num_envs, 6))
    for t in range(len(actions)):
        obs, reward, *_ = sim.step(actions[t])
        qpos, qvel = sim.get_state()
        for i, d in enumerate(datas):
            commands[i].append(ref.applied("HalfCheetahVel", m, actions[t, i]))
            d.ctrl[:] = commands[i][t - delays[i]] if t >= delays[i] else zero
            mujoco.mj_step(m, d)
            np.testing.assert_array_equal(qpos[i], d.qpos)
            np.testing.assert_array_equal(qvel[i], d.qvel)
            # the control cost is the action's, as without a delay
            full = ref.derived(m, d)
            task = tasks[sim.task_index[i]]
            np.testing.assert_allclose(reward[i], ref.reward("HalfCheetahVel", task, m, full,
                                                             actions[t, i]), rtol=1e-5,
                                       atol=1e-5)


def _rollout(family, tasks, policy, threads, first_stream=0):
    sim = metarobot.BatchSim(family, tasks, envs_per_task=2, seed=5, num_threads=threads,
                             first_stream=first_stream)
    return sim.rollout(policy, horizon=40)


@pytest.mark.parametrize("name", ["HalfCheetahVelServo", "servo arm"])
def test_actuated_rollouts_are_identical_at_any_thread_count_and_split(name, arm_path):
    family = (metarobot.make_family(name) if name != "servo arm"
              else arm_family(arm_path, delay_ms=(0.0, 14.0)))
    tasks = family.sample_tasks(4, seed=1)
    torch.manual_seed(0)
    policy = metarobot.GaussianMLPPolicy(family.observation_dim(), family.load_model().nu,
                                         (16,))
    one = _rollout(family, tasks, policy, threads=1)
    two = _rollout(family, tasks, policy, threads=2)
    # the same simulations as two batches: tasks 0-1 (streams 0-3) and 2-3 (streams 4-7)
    first = _rollout(family, tasks[:2], policy, threads=2)
    second = _rollout(family, tasks[2:], policy, threads=1, first_stream=4)
    # time-major (T, N, ...) arrays join along the simulations' axis 1; final ones along 0
    for field, axis in (("observations", 1), ("actions", 1), ("rewards", 1), ("valid", 1),
                        ("final_observations", 0)):
        a = getattr(one, field)
        np.testing.assert_array_equal(a, getattr(two, field), err_msg=field)
        split = np.concatenate([getattr(first, field), getattr(second, field)], axis=axis)
        np.testing.assert_array_equal(a, split, err_msg=field)
    assert np.isfinite(one.returns).all()


def test_servo_family_moves_joints_to_targets_with_unbounded_actions():
    """HalfCheetahVelServo: the same model and observation sizes, actions are targets."""
    servo = metarobot.make_family("HalfCheetahVelServo")
    torque = metarobot.make_family("HalfCheetahVel")
    assert servo.observation_dim() == torque.observation_dim() == 20
    sim = metarobot.BatchSim(servo, servo.sample_tasks(2, seed=0))
    assert np.isinf(sim.action_low).all() and np.isinf(sim.action_high).all()
    sim.reset()
    a = np.full((2, 6), 0.5)
    for _ in range(20):
        sim.step(a)
    qpos, _ = sim.get_state()
    # held targets 0.25 rad above qpos0 (the joints' own limits and gravity aside): the joints
    # moved toward them
    assert (qpos[:, 3:] > 0.02).sum() >= 6


# ------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("settings, message", [
    (dict(kind="servo", kp=-1.0), "kp should be >= 0, got -1"),
    (dict(kind="servo", effort_limit=0.0), "effort_limit should be > 0, got 0"),
    (dict(kind="torque", kp=20.0), "['kp'] are servo settings"),
    (dict(kind="pd"), "kind should be 'torque' or 'servo', got 'pd'"),
    (dict(delay_ms=(10.0, 5.0)), "delay_ms should be >= 0 with low <= high"),
    (dict(delay_ms=(1.0, 2.0, 3.0)), "a (low, high) pair of ms"),
    (dict(kind="servo", saturation_torque=5.0), "needs both saturation_torque and max_velocity"),
])
def test_bad_actuator_settings_are_refused_with_what_was_expected(settings, message):
    with pytest.raises(ValueError, match="actuators") as info:
        T.Actuators(**settings)
    assert message in str(info.value)


def test_family_level_actuator_errors(arm_path):
    with pytest.raises(ValueError, match="set normalize_actions=False"):
        metarobot.make_family("HalfCheetahVel", actuators={"kind": "servo"})
    with pytest.raises(ValueError, match="unknown \\['gain'\\]"):
        metarobot.make_family("HalfCheetahVel", actuators={"gain": 3})
    cheetah = metarobot.make_family("HalfCheetahVel")
    with pytest.raises(ValueError, match="the task parameter kp needs servo actuators"):
        dataclasses.replace(cheetah, parameters=cheetah.parameters + (
            P.ActuatorRange("kp", 1.0, 2.0),))
    with pytest.raises(ValueError, match="Qvel: delay should be an integer >= 0 \\(physics "
                                         "steps\\), got 1.5"):
        dataclasses.replace(cheetah, observation=(T.Qpos(1), T.Qvel(delay=1.5)))
    with pytest.raises(ValueError, match="Qpos: noise should be a std >= 0, got -0.1"):
        dataclasses.replace(cheetah, observation=(T.Qpos(1, noise=-0.1), T.Qvel()))
    with pytest.raises(ValueError, match="kp \\(Nm/rad\\) should be >= 0, got -1"):
        P.ActuatorRange("kp", -1.0, 2.0).validate()
    with pytest.raises(ValueError, match="command_delay_ms is one value per task"):
        P.ActuatorRange("command_delay_ms", 0.0, 2.0, motors=3).validate()
    # a per-motor tuple of the wrong length, found when the batch is built, before any step
    family = arm_family(arm_path)
    bad = metarobot.make_family(family, actuators=dict(SERVO, action_scale=(0.1, 0.2)))
    with pytest.raises(ValueError, match="action_scale should be one number or 3 \\(one per "
                                         "model actuator\\), got 2"):
        metarobot.BatchSim(bad, bad.sample_tasks(1, seed=0))
    # per-motor draws for another number of motors than the model has
    params = tuple(P.ActuatorRange("kp", 1.0, 2.0, motors=4) if d.name == "kp" else d
                   for d in family.parameters)
    wrong = dataclasses.replace(family, parameters=params)
    with pytest.raises(ValueError, match="kp is drawn for 4 motors, the model has 3"):
        metarobot.BatchSim(wrong, wrong.sample_tasks(1, seed=0))


def test_servos_refuse_a_model_whose_actuators_are_not_plain_motors(tmp_path):
    path = tmp_path / "position.xml"
    path.write_text(ARM_XML.replace('<motor joint="elbow" gear="1"/>',
                                    '<position joint="elbow" kp="10"/>'))
    family = arm_family(str(path))
    with pytest.raises(ValueError, match="plain motors \\(no bias, no dynamics\\); actuator "
                                         "#2 is not"):
        metarobot.BatchSim(family, family.sample_tasks(1, seed=0))


def test_core_checks_actuator_arrays_before_any_work(arm_path):
    family = arm_family(arm_path)
    model = family.load_model()
    spec = family.compile(model)
    tasks = family.sample_tasks(2, seed=0)
    good = family.actuator_settings(model, tasks)

    def make(**changes):
        return _core.BatchEngine([model._address] * 2, **spec, params=[0.0] * 2 * spec["nparam"],
                                 seed=0, nthread=1, autoreset=True,
                                 actuators=dict(good, **changes))
    make()  # the settings as the family makes them are accepted
    with pytest.raises(ValueError, match="kp \\(nsim x motors = 2 x 3\\) should have 6 "
                                         "entries, got 5"):
        make(kp=good["kp"][:5])
    with pytest.raises(ValueError, match="kd of simulation 1, motor 2 should be a finite "
                                         "number >= 0, got -1"):
        make(kd=good["kd"][:5] + [-1.0])
    with pytest.raises(ValueError, match="command delay of simulation 0 should be a range 0 "
                                         "<= lo <= hi physics steps, got \\[3, 1\\]"):
        make(delay_lo=[3, 0], delay_hi=[1, 0])
    with pytest.raises(ValueError, match="unknown setting 'gains'"):
        make(gains=[1.0])
    with pytest.raises(ValueError, match="motor 0 drives qpos 9 / dof 0, outside the "
                                         "model.s nq 3 / nv 3"):
        make(qpos_adr=[9, 1, 2])
