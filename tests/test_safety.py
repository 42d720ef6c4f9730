"""The PD robot's safety state machine: every transition and every stop trigger."""

import math

import numpy as np
import pytest

from metarobot.deploy.safety import (MotorState, Phase, SafetyLimits, SafetyMachine,
                                     gravity_from_quaternion, tilt_degrees)

N = 3
DEFAULT = np.array([0.0, 0.8, -1.5])
UP = np.array([0.0, 0.0, -1.0])


def limits(**kw):
    base = dict(joint_low=[-1.0, -1.5, -2.7], joint_high=[1.0, 3.4, -0.8],
                effort_limit=[20.0, 20.0, 40.0], stand_s=1.0)
    base.update(kw)
    return SafetyLimits(**base)


def state(t, q=DEFAULT, dq=(0.0,) * N, gravity=UP, tau=None):
    return MotorState(t, np.asarray(q, float), np.asarray(dq, float),
                      np.asarray(gravity, float), None if tau is None else np.asarray(tau))


def machine(**kw):
    return SafetyMachine(limits(**kw), DEFAULT, [20.0] * N, [0.5] * N, now=0.0)


def to_policy(m, t=0.0, q=DEFAULT):
    m.start_stand(t, state(t, q))
    m.command(t + 1.01, state(t + 1.0, DEFAULT))
    assert m.phase is Phase.HOLD
    m.start_policy(t + 1.02)
    return t + 1.02


def test_passive_stand_hold_policy_stop():
    m = machine()
    cmd = m.command(0.0, state(0.0))
    assert m.phase is Phase.PASSIVE and (cmd.kp == 0).all() and (cmd.kd == 1.0).all()
    lying = np.array([0.0, 1.2, -2.6])
    m.start_stand(0.1, state(0.1, lying))
    half = m.command(0.6, state(0.6, lying))  # half way: the targets half way too
    np.testing.assert_allclose(half.q, lying + 0.5 * (DEFAULT - lying))
    assert (half.kp == 20).all() and (half.kd == 0.5).all()
    m.command(1.1, state(1.1))
    assert m.phase is Phase.HOLD
    np.testing.assert_allclose(m.command(1.2, state(1.2)).q, DEFAULT)
    m.start_policy(1.3)
    m.set_policy_targets(1.3, DEFAULT + 0.1)
    np.testing.assert_allclose(m.command(1.31, state(1.3)).q, DEFAULT + 0.1)
    np.testing.assert_allclose(m.command(1.32, state(1.31)).q, DEFAULT + 0.1)  # held
    m.start_stand(1.4, state(1.4))  # between episodes: back to the default pose
    assert m.phase is Phase.STAND
    m.stop(1.5, "stop requested")
    cmd = m.command(1.6, state(1.6))
    assert m.phase is Phase.STOP and (cmd.kp == 0).all() and (cmd.kd == 2.0).all()
    assert [(t.source, t.target) for t in m.transitions[1:]] == [
        (Phase.PASSIVE, Phase.STAND), (Phase.STAND, Phase.HOLD), (Phase.HOLD, Phase.POLICY),
        (Phase.POLICY, Phase.STAND), (Phase.STAND, Phase.STOP)]
    assert all(t.reason for t in m.transitions) and m.transitions[-1].time == 1.5
    with pytest.raises(ValueError, match="only a new start leaves STOP"):
        m.start_stand(2.0, state(2.0))


@pytest.mark.parametrize("phase", ["passive", "stand", "hold", "policy"])
def test_stop_from_every_phase(phase):
    m = machine()
    if phase == "stand":
        m.start_stand(0.0, state(0.0))
    elif phase == "hold":
        m.start_stand(0.0, state(0.0))
        m.command(1.01, state(1.0))
    elif phase == "policy":
        to_policy(m)
    assert m.phase.value == phase
    m.stop(5.0, "SIGTERM")
    assert m.phase is Phase.STOP and m.stop_reason == "SIGTERM"
    m.stop(6.0, "again")
    assert m.stop_reason == "SIGTERM" and len([t for t in m.transitions
                                               if t.target is Phase.STOP]) == 1


def test_policy_only_from_hold():
    m = machine()
    with pytest.raises(ValueError, match="from HOLD"):
        m.start_policy(0.0)
    m.set_policy_targets(0.0, DEFAULT + 0.3)  # outside POLICY: ignored
    assert m.phase is Phase.PASSIVE


def test_stale_state_stops():
    m = machine(state_timeout=0.1)
    t = to_policy(m)
    m.command(t + 0.05, state(t))
    assert m.phase is Phase.POLICY
    m.command(t + 0.2, state(t))
    assert m.phase is Phase.STOP and "stale state" in m.stop_reason
    m2 = machine()
    m2.command(0.0, None)
    assert m2.phase is Phase.STOP and "no state" in m2.stop_reason


def test_silent_policy_stops():
    m = machine(policy_timeout=0.1)
    t = to_policy(m)
    m.set_policy_targets(t + 0.05, DEFAULT)
    m.command(t + 0.14, state(t + 0.14))
    assert m.phase is Phase.POLICY
    m.command(t + 0.16, state(t + 0.16))
    assert m.phase is Phase.STOP and "no policy targets for 110 ms" in m.stop_reason


@pytest.mark.parametrize("field", ["q", "dq", "gravity", "tau"])
def test_non_finite_state_stops(field):
    m = machine()
    bad = {"q": DEFAULT.copy(), "dq": np.zeros(N), "gravity": UP.copy(), "tau": np.zeros(N)}
    bad[field][0] = math.nan
    m.command(0.0, state(0.0, **bad))
    assert m.phase is Phase.STOP and "non-finite" in m.stop_reason


def test_non_finite_policy_targets_stop():
    m = machine()
    t = to_policy(m)
    m.set_policy_targets(t, [0.0, math.inf, -1.5])
    assert m.phase is Phase.STOP and "non-finite policy targets" in m.stop_reason


def test_tilt_stops_in_every_phase():
    on_side = [0.0, -1.0, 0.0]
    assert tilt_degrees(on_side) == pytest.approx(90.0)
    m = machine(tilt_max_degrees=60.0)
    m.command(0.0, state(0.0, gravity=on_side))  # lying on its side: it never stands up
    assert m.phase is Phase.STOP and "tilt 90.0" in m.stop_reason
    m = machine(tilt_max_degrees=60.0)
    t = to_policy(m)
    tilted = [math.sin(math.radians(61)), 0.0, -math.cos(math.radians(61))]
    m.command(t, state(t, gravity=tilted))
    assert m.phase is Phase.STOP and "tilt 61.0" in m.stop_reason


def test_gravity_from_quaternion():
    np.testing.assert_allclose(gravity_from_quaternion([1, 0, 0, 0]), UP, atol=1e-12)
    # rolled 90 degrees about x: gravity along the body's -y... or +y
    c = math.cos(math.pi / 4)
    g = gravity_from_quaternion([c, c, 0, 0])
    assert tilt_degrees(g) == pytest.approx(90.0)
    np.testing.assert_allclose(g, [0.0, -1.0, 0.0], atol=1e-12)


def test_joint_limit_stops_in_hold_and_policy_only():
    folded = np.array([0.0, 1.2, -2.70])  # calf at its limit: lying down
    m = machine(joint_margin=0.05)
    m.command(0.0, state(0.0, folded))
    m.start_stand(0.0, state(0.0, folded))
    m.command(0.1, state(0.1, folded))
    assert m.phase is Phase.STAND  # standing up from a folded pose is allowed
    m.command(1.01, state(1.0))
    assert m.phase is Phase.HOLD
    m.command(1.1, state(1.1, [0.0, 0.8, -0.76]))
    assert m.phase is Phase.STOP and "joint limit: motor 2" in m.stop_reason


def test_torque_estimate_stops_when_sustained():
    m = machine(over_torque_s=0.1)
    t = to_policy(m)
    m.command(t, state(t, tau=[0.0, 25.0, 0.0]))
    m.command(t + 0.05, state(t + 0.05, tau=[0.0, 25.0, 0.0]))
    assert m.phase is Phase.POLICY  # a moment over the limit: allowed
    m.command(t + 0.06, state(t + 0.06, tau=[0.0, 5.0, 0.0]))  # back under: the clock resets
    m.command(t + 0.1, state(t + 0.1, tau=[0.0, 25.0, 0.0]))
    m.command(t + 0.15, state(t + 0.15, tau=[0.0, 25.0, 0.0]))
    assert m.phase is Phase.POLICY
    m.command(t + 0.25, state(t + 0.25, tau=[0.0, 25.0, 0.0]))
    assert m.phase is Phase.STOP and "torque: motor 1 at 25.0 Nm" in m.stop_reason


def test_torque_estimate_from_the_command_without_the_robots():
    m = machine(over_torque_s=0.01, joint_low=[-9.0] * N, joint_high=[9.0] * N)
    t = to_policy(m)
    far = DEFAULT + np.array([0.0, 0.0, 2.5])  # kp 20 x 2.5 rad = 50 Nm > 40
    m.command(t, state(t, far))
    m.command(t + 0.05, state(t + 0.05, far))
    assert m.phase is Phase.STOP and "torque: motor 2" in m.stop_reason


def test_target_jumps_are_clamped_then_stop():
    m = machine(max_target_step=0.2, max_clamped_steps=3)
    t = to_policy(m)
    m.set_policy_targets(t, DEFAULT + [0.0, 1.0, 0.0])
    np.testing.assert_allclose(m.command(t, state(t)).q, DEFAULT + [0.0, 0.2, 0.0])
    m.set_policy_targets(t + 0.02, DEFAULT + [0.0, 0.3, 0.0])  # within 0.2 of 0.2: no clamp
    np.testing.assert_allclose(m.command(t + 0.02, state(t + 0.02)).q, DEFAULT + [0, 0.3, 0])
    assert m.phase is Phase.POLICY and m.clamped_total == 1
    for k in range(3):
        m.set_policy_targets(t + 0.04 + 0.02 * k, DEFAULT - 1.0)
        m.command(t + 0.04 + 0.02 * k, state(t + 0.04 + 0.02 * k))
    assert m.phase is Phase.STOP and "target jumps: 3 policy steps" in m.stop_reason


def test_limits_refuse_bad_input():
    with pytest.raises(ValueError, match="joint_high should be 3 numbers"):
        limits(joint_high=[1.0, 2.0])
    with pytest.raises(ValueError, match="tilt_max_degrees should be a positive"):
        limits(tilt_max_degrees=0)
    with pytest.raises(ValueError, match="max_clamped_steps"):
        limits(max_clamped_steps=0)
    with pytest.raises(ValueError, match="kp should be 3 finite"):
        SafetyMachine(limits(), DEFAULT, [20.0] * 2, [0.5] * 3, 0.0)


def test_a_policy_is_swapped_in_hold_only_and_recorded():
    m = machine()
    with pytest.raises(ValueError, match="swapped in HOLD only, the robot is in PASSIVE"):
        m.swap_policy(0.0, "adapted")
    t = to_policy(m)
    with pytest.raises(ValueError, match="the robot is in POLICY"):
        m.swap_policy(t, "adapted")
    m.start_stand(t + 0.1, state(t + 0.1))
    with pytest.raises(ValueError, match="the robot is in STAND"):
        m.swap_policy(t + 0.2, "adapted")
    m.command(t + 1.2, state(t + 1.2))
    m.swap_policy(t + 1.3, "adapted policy swapped in (adaptation step 1)")
    last = m.transitions[-1]
    assert (last.source, last.target) == (Phase.HOLD, Phase.HOLD) and m.phase is Phase.HOLD
    assert last.reason == "adapted policy swapped in (adaptation step 1)"
    np.testing.assert_allclose(m.command(t + 1.4, state(t + 1.4)).q, DEFAULT)  # still held
    m.start_policy(t + 1.5)  # the new policy takes over from HOLD as the first did
    assert m.phase is Phase.POLICY
