"""Terrain families: the heightfield MuJoCo collides with is the generated terrain, tasks on
different terrains share one batch and each matches a plain MuJoCo loop on its own model, and the
height scan and health check read the ground under the robot."""

import mujoco
import numpy as np
import pytest

import metarobot
from metarobot import terrain
import reference as ref

TERRAIN_FAMILIES = ("AntTerrainVel", "AntTerrainDir", "Walker2DTerrainVel", "Walker2DTerrainDir")


def ground(m, d, x, y):
    """Height of the terrain geom's surface at (x, y) by MuJoCo's own ray cast (m)."""
    geom = m.geom("terrain").id
    dist = mujoco.mj_rayHfield(m, d, geom, np.array([x, y, 5.0]), np.array([0.0, 0.0, -1.0]),
                               None)
    return 5.0 - dist


def task_on(family, kind, difficulty=0.8, seed=3):
    values = {n: 1.0 for n in family.parameter_names}
    values.update(terrain=float(terrain.KINDS.index(kind)), difficulty=difficulty,
                  terrain_seed=float(seed))
    return family.task(**values)


@pytest.mark.parametrize("name", ["AntTerrainDir", "Walker2DTerrainVel"])
@pytest.mark.parametrize("kind", terrain.KINDS)
def test_collision_surface_is_the_generated_terrain(name, kind):
    fam = metarobot.make_family(name)
    task = task_on(fam, kind)
    m = fam.task_model(fam.load_model(), task)
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    heights = fam.terrain.heights(m, task.as_dict())
    hid = m.hfield("terrain").id
    half_x, half_y = m.hfield_size[hid][:2]
    rows, cols = heights.shape
    rng = np.random.default_rng(0)
    # interior grid points (a ray exactly on the heightfield's outer edge may graze its side)
    for r, c in zip(rng.integers(1, rows - 1, size=40), rng.integers(1, cols - 1, size=40)):
        x = -half_x + 2 * half_x * c / (cols - 1)
        y = -half_y + 2 * half_y * r / (rows - 1)
        # MuJoCo stores the heightfield in float32
        assert ground(m, d, x, y) == pytest.approx(heights[r, c], abs=1e-6)
    if kind != "flat":
        assert np.ptp(heights) > 0.02
    # flat where robots start
    assert ground(m, d, 0.0, 0.0) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["rough", "slopes", "stairs", "waves"])
def test_difficulty_scales_the_relief_and_seeds_vary_it(kind):
    shape, half = (41, 161), (8.0, 2.0)
    easy = terrain.generate(kind, 0.0, 1, shape, half)
    hard = terrain.generate(kind, 1.0, 1, shape, half)
    # slopes: steeper grades reach the height bound sooner; compare the largest gradient
    measure = (lambda h: np.abs(np.diff(h, axis=1)).max()) if kind == "slopes" else np.ptp
    assert measure(hard) > 1.5 * measure(easy)
    np.testing.assert_array_equal(terrain.generate(kind, 0.5, 7, shape, half),
                                  terrain.generate(kind, 0.5, 7, shape, half))
    assert not np.array_equal(terrain.generate(kind, 0.5, 7, shape, half),
                              terrain.generate(kind, 0.5, 8, shape, half))


def test_mixed_terrains_in_one_batch_match_plain_loops_on_each_task_model():
    fam = metarobot.make_family("Walker2DTerrainVel")
    tasks = [task_on(fam, kind, seed=i) for i, kind in enumerate(terrain.KINDS)]
    sim = metarobot.BatchSim(fam, tasks, envs_per_task=2, seed=5)
    sim.reset()
    datas = ref.plain_copies(sim)
    actions = np.random.default_rng(2).uniform(-0.3, 0.3, (40, sim.num_envs, 6))
    alive = np.ones(sim.num_envs, bool)
    for a in actions:
        _, _, term, trunc, _ = sim.step(a)
        alive &= ~(term | trunc)  # an ended episode was reset: compare the running ones
        q, v = sim.get_state()
        for i, d in enumerate(datas):
            if not alive[i]:
                continue
            m = sim.models[sim.task_index[i]]
            ref.step(m, d, a[i], fam.frame_skip)
            np.testing.assert_array_equal(q[i], d.qpos)
            np.testing.assert_array_equal(v[i], d.qvel)
    assert alive.sum() >= 2  # the comparison covered whole stretches of several tasks


def test_height_scan_and_health_read_the_ground_under_the_robot():
    fam = metarobot.make_family("AntTerrainDir")
    task = task_on(fam, "stairs", difficulty=1.0, seed=0)
    sim = metarobot.BatchSim(fam, [task], envs_per_task=3, seed=0)
    sim.reset()
    m = sim.models[0]
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    # a torso 0.5 m above the ground at three places on the stairs, one 0.1 m above
    qpos, qvel = sim.get_state()
    places = [(3.3, 0.4, 0.5), (-4.1, 1.0, 0.5), (5.2, -2.0, 0.1)]
    for i, (x, y, h) in enumerate(places):
        qpos[i, :3] = x, y, ground(m, d, x, y) + h
    obs = sim.set_state(qpos, np.zeros_like(qvel))
    scan = obs[:, -15:]
    for i, (x, y, h) in enumerate(places):
        expected = [qpos[i, 2] - ground(m, d, x + 0.4 * (c - 2), y + 0.4 * (r - 1))
                    for r in range(3) for c in range(5)]
        np.testing.assert_allclose(scan[i], expected, atol=1e-5)
        assert scan[i][7] == pytest.approx(h, abs=1e-5)  # the centre point, under the torso
    # one step later the low torso is outside the health range [0.2, 1.0] above the ground
    _, _, term, _, _ = sim.step(np.zeros((3, 8)))
    assert term.tolist() == [False, False, True]


def test_terrain_bad_input():
    fam = metarobot.make_family("AntTerrainDir")
    with pytest.raises(ValueError, match="terrain kind should be one of"):
        metarobot.make_family("AntTerrainDir", terrain=("lava",))
    with pytest.raises(ValueError, match="difficulty range should lie in"):
        metarobot.make_family("AntTerrainDir", terrain={"difficulty": (0.5, 2.0)})
    with pytest.raises(ValueError, match="terrain takes"):
        metarobot.make_family("AntTerrainDir", terrain={"height": 1})
    bad = task_on(fam, "rough", difficulty=1.5)
    with pytest.raises(ValueError, match="difficulty should be in"):
        metarobot.BatchSim(fam, [bad])
    with pytest.raises(ValueError, match="terrain kind should be one of"):
        terrain.generate("ice", 0.5, 0, (3, 3), (1.0, 1.0))
    # only stairs chosen, all stairs fit the heightfield of 1 m; one of 0.3 m does not hold them
    stairs = metarobot.make_family("Walker2DTerrainVel", terrain=("stairs",))
    assert {t["terrain"] for t in stairs.sample_tasks(10, seed=0)} == {3.0}


def test_a_terrain_that_does_not_fit_the_heightfield_is_refused(tmp_path):
    source = (metarobot.families.envs_dir() / "walker2d_terrain.xml").read_text()
    small = source.replace('size="10 1 1 0.2"', 'size="10 1 0.3 0.2"').replace(
        'pos="0 0 -0.5"', 'pos="0 0 -0.15"')
    path = tmp_path / "walker_small.xml"
    path.write_text(small)
    fam = metarobot.make_family("Walker2DTerrainVel", model_file=str(path))
    task = task_on(fam, "slopes", difficulty=1.0)
    with pytest.raises(ValueError, match=r"spans heights .* holds \[-0.150, 0.150\] m"):
        metarobot.BatchSim(fam, [task])


def test_height_terms_need_a_heightfield():
    fam = metarobot.make_family("Walker2DTerrainVel", model_file="walker2d.xml")
    with pytest.raises(ValueError, match="no heightfield"):
        metarobot.BatchSim(fam, fam.sample_tasks(1, seed=0))
