"""A diverging simulation ends its episode with a flag; the others are untouched."""

import numpy as np

import metarobot


def _sims():
    family = metarobot.make_family("AntVel")
    tasks = family.sample_tasks(2, seed=0)
    return [metarobot.BatchSim(family, tasks, envs_per_task=2, seed=5) for _ in range(2)]


def test_diverged_simulation_is_flagged_and_others_untouched():
    bad, good = _sims()
    bad.reset()
    good.reset()
    q, v = bad.get_state()
    v[1, :] = 1e12  # beyond MuJoCo's bound on velocities: it warns and resets the data
    bad.set_state(q[1:2], v[1:2], ids=[1])
    actions = np.zeros((4, 8))
    obs_b, rew_b, term_b, trunc_b, info_b = bad.step(actions)
    obs_g, rew_g, term_g, trunc_g, info_g = good.step(actions)
    assert info_b["diverged"].tolist() == [False, True, False, False]
    assert term_b[1] and info_b["_final_obs"][1]
    assert np.isfinite(obs_b).all() and np.isfinite(rew_b).all()
    others = [0, 2, 3]
    np.testing.assert_array_equal(obs_b[others], obs_g[others])
    np.testing.assert_array_equal(rew_b[others], rew_g[others])
    qb, vb = bad.get_state()
    qg, vg = good.get_state()
    np.testing.assert_array_equal(qb[others], qg[others])
    # the diverged simulation was reset and goes on
    assert np.isfinite(qb[1]).all() and np.isfinite(vb[1]).all()
    for _ in range(5):
        obs_b, _, _, _, info_b = bad.step(actions)
        obs_g, _, _, _, _ = good.step(actions)
        assert not info_b["diverged"].any()
        np.testing.assert_array_equal(obs_b[others], obs_g[others])


def test_unstable_model_diverges_in_rollout_without_crashing(tmp_path):
    # a stiff spring integrated with a far too large timestep blows up within a few steps
    xml = tmp_path / "spring.xml"
    xml.write_text("""
<mujoco>
  <option timestep="0.5"/>
  <worldbody>
    <body name="torso">
      <joint name="slide" type="slide" axis="1 0 0" stiffness="1e9"/>
      <geom type="sphere" size="0.1" mass="1"/>
    </body>
  </worldbody>
  <actuator><motor joint="slide" ctrllimited="true" ctrlrange="-1 1"/></actuator>
</mujoco>""")
    family = metarobot.TaskFamily(
        name="Spring", model_file=str(xml), frame_skip=1, horizon=50,
        observation=(metarobot.terms.Qpos(), metarobot.terms.Qvel()),
        reward=(metarobot.terms.Constant("alive", 1.0),), termination=(),
        parameters=(metarobot.terms.Uniform("unused", 0.0, 1.0),), reset_qpos_noise=0.1)
    sim = metarobot.BatchSim(family, family.sample_tasks(3, seed=0), seed=0)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
    traj = sim.rollout(policy)
    assert traj.diverged.all()
    assert (traj.lengths < 50).all()
    for i in range(3):
        n = traj.lengths[i]
        assert traj.valid[:n, i].all() and not traj.valid[n:, i].any()
        assert traj.terminated[n - 1, i]
    assert np.isfinite(traj.observations).all()
    assert np.isfinite(traj.final_observations).all()
