"""Meta-learners: gradients against finite differences, the Fisher products against the exact
KL Hessian, the TRPO step's KL bound, Reptile's update, the baseline against least squares."""

import numpy as np
import pytest
import torch

import metarobot
from metarobot import meta, samples, trpo
from metarobot.baseline import fit_linear_baseline



@pytest.fixture(autouse=True)
def float64():
    """Finite differences need double precision; other test modules keep float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def tiny_problem(seed=0, ntask=3, steps=6, obs_dim=3, act_dim=2, activation="tanh"):
    g = torch.Generator().manual_seed(seed)
    policy = metarobot.GaussianMLPPolicy(obs_dim, act_dim, hidden_sizes=(5,),
                                         activation=activation)
    spec = meta.PolicySpec(policy.nlayers, policy.activation)
    theta = {n: (torch.randn(p.shape, generator=g) * 0.5).double()
             for n, p in sorted(policy.params().items())}

    def batch():
        mask = (torch.rand(ntask, steps, generator=g) > 0.2).double()
        return samples.TaskBatch(obs=torch.randn(ntask, steps, obs_dim, generator=g),
                              actions=torch.randn(ntask, steps, act_dim, generator=g),
                              advantages=torch.randn(ntask, steps, generator=g), mask=mask,
                              returns=torch.zeros(ntask), horizon=steps)
    pre, post = batch(), batch()
    adapted = meta.adapt(spec, theta, [pre], 0.3, first_order=True)
    # the sampling policy is a little off the adapted one, as after an outer step
    shifted = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in adapted.items()}
    meta.record_old(spec, shifted, post)
    return spec, theta, pre, post


def flat(d):
    return torch.cat([d[k].reshape(-1) for k in sorted(d)])


def finite_difference(f, theta, direction, eps=1e-6):
    plus = {k: v + eps * direction[k] for k, v in theta.items()}
    minus = {k: v - eps * direction[k] for k, v in theta.items()}
    return (float(f(plus)) - float(f(minus))) / (2 * eps)


def assert_gradient_matches_finite_differences(loss, params, seed, directions=3):
    """torch.func's gradient of loss at params against central differences along random
    directions."""
    g = torch.func.grad(loss)(params)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(directions):
        d = {k: torch.randn(v.shape, generator=gen) for k, v in params.items()}
        fd = finite_difference(loss, params, d)
        assert abs(float(flat(g) @ flat(d)) - fd) < 1e-6 * max(1.0, abs(fd))
    return g


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(inner_steps):
    spec, theta, pre, post = tiny_problem()
    batches = [pre] * inner_steps

    def loss(p):
        return meta.surrogate(spec, meta.adapt(spec, p, batches, 0.3, False), post)
    assert_gradient_matches_finite_differences(loss, theta, seed=1, directions=4)


def test_first_order_ignores_the_adaptation_jacobian():
    spec, theta, pre, post = tiny_problem(seed=2)

    def loss(p, first_order, lr=0.3):
        return meta.surrogate(spec, meta.adapt(spec, p, [pre], lr, first_order), post)
    second = flat(torch.func.grad(lambda p: loss(p, False))(theta))
    first = flat(torch.func.grad(lambda p: loss(p, True))(theta))
    # first order: the gradient at the adapted parameters, summed over tasks
    adapted = meta.adapt(spec, theta, [pre], 0.3, True)
    at_phi = flat({k: v.sum(0) for k, v in torch.func.grad(
        lambda a: meta.surrogate(spec, a, post))(adapted).items()})
    torch.testing.assert_close(first, at_phi)
    assert (first - second).norm() > 1e-4 * second.norm()
    # as the inner step size vanishes the two agree
    tiny_second = flat(torch.func.grad(lambda p: loss(p, False, 1e-9))(theta))
    tiny_first = flat(torch.func.grad(lambda p: loss(p, True, 1e-9))(theta))
    assert (tiny_first - tiny_second).norm() < 1e-6 * tiny_second.norm()


def test_learned_step_sizes_meta_gradient_matches_finite_differences():
    """Meta-SGD: per-entry step sizes; the step is theta - alpha * g entry by entry, and the
    meta-gradient in theta and alpha together matches finite differences."""
    spec, theta, pre, post = tiny_problem(seed=10)
    gen = torch.Generator().manual_seed(11)
    sizes = {k: 0.3 + 0.1 * torch.rand(v.shape, generator=gen)
             for k, v in meta.initial_step_sizes(theta, 0.0).items()}
    full = {**theta, **sizes}
    policy, alpha = meta.split_step_sizes(full)
    assert set(policy) == set(theta) and set(alpha) == set(theta)
    g = torch.func.vmap(torch.func.grad(lambda p, o, a, adv, m: meta.pg_loss(spec, p, o, a, adv, m)),
                        in_dims=(None, 0, 0, 0, 0))(theta, pre.obs, pre.actions, pre.advantages,
                                                    pre.mask)
    stepped = meta.inner_step(spec, policy, pre, alpha, False, False)
    for k in theta:
        torch.testing.assert_close(stepped[k], theta[k] - alpha[k] * g[k])

    def loss(p):
        pol, lr = meta.split_step_sizes(p)
        return meta.surrogate(spec, meta.adapt(spec, pol, [pre, pre], lr, False), post)
    grad = assert_gradient_matches_finite_differences(loss, full, seed=13)
    assert flat({k: v for k, v in grad.items() if k.startswith("inner_lr/")}).norm() > 1e-4


def test_lvc_step_is_the_policy_gradient_step_with_the_score_outer_product():
    """ProMP's low-variance curvature objective: the same adapted parameters as the policy
    gradient at the sampling parameters; the adaptation's Jacobian differs from pg's by
    lr x (per task) mean_t A_t grad log pi_t grad log pi_t^T, scores from a per-sample loop."""
    spec, theta, pre, post = tiny_problem(seed=6)
    lr = 0.3
    with pytest.raises(ValueError, match="sampling log-probabilities"):
        meta.inner_step(spec, theta, pre, lr, False, False, "lvc")
    meta.record_sampling(spec, theta, pre, batched=False)
    pg = meta.inner_step(spec, theta, pre, lr, False, False, "pg")
    lvc = meta.inner_step(spec, theta, pre, lr, False, False, "lvc")
    torch.testing.assert_close(flat(lvc), flat(pg))

    gen = torch.Generator().manual_seed(7)
    v = {k: torch.randn(x.shape, generator=gen) for k, x in theta.items()}
    jv = {name: torch.func.jvp(lambda p: meta.inner_step(spec, p, pre, lr, False, False, name),
                               (theta,), (v,))[1] for name in ("pg", "lvc")}
    names = sorted(theta)
    vflat = flat(v)
    ntask, steps = pre.mask.shape
    for i in range(ntask):
        expected = torch.zeros_like(vflat)
        for t in range(steps):
            score = torch.func.grad(lambda p: spec.log_prob(p, pre.obs[i, t], pre.actions[i, t]))(
                theta)
            s_t = torch.cat([score[n].reshape(-1) for n in names])
            expected += pre.mask[i, t] * pre.advantages[i, t] * s_t * (s_t @ vflat)
        expected *= lr / pre.mask[i].sum()
        diff = torch.cat([(jv["lvc"][n][i] - jv["pg"][n][i]).reshape(-1) for n in names])
        assert expected.norm() > 1e-3
        torch.testing.assert_close(diff, expected, rtol=1e-8, atol=1e-10)


def test_lvc_meta_gradient_matches_finite_differences():
    spec, theta, pre, post = tiny_problem(seed=8)
    meta.record_sampling(spec, theta, pre, batched=False)

    def loss(p):
        return meta.surrogate(spec, meta.adapt(spec, p, [pre], 0.3, False, "lvc"), post)
    assert_gradient_matches_finite_differences(loss, theta, seed=9)


@pytest.mark.slow
@pytest.mark.parametrize("inner_steps, first_order, objective, learned, activation",
                         [(1, False, "pg", False, "tanh"), (2, False, "pg", False, "tanh"),
                          (1, True, "pg", False, "tanh"), (1, False, "lvc", False, "tanh"),
                          (2, False, "lvc", False, "tanh"), (1, False, "pg", True, "tanh"),
                          (2, False, "pg", True, "tanh"), (1, True, "pg", True, "tanh"),
                          (1, False, "pg", False, "relu"), (2, False, "pg", True, "relu")])
def test_fisher_product_equals_kl_hessian(inner_steps, first_order, objective, learned,
                                          activation):
    spec, theta, pre, post = tiny_problem(seed=3, activation=activation)
    batches = [pre] * inner_steps
    # (the second step's batch is sampled elsewhere; any constants do for the identity)
    meta.record_sampling(spec, theta, pre, batched=False)
    if learned:  # Meta-SGD: step sizes of their own per entry, in the differentiated dict
        gen = torch.Generator().manual_seed(12)
        theta = dict(sorted({**theta, **{k: 0.2 + 0.2 * torch.rand(v.shape, generator=gen)
                                         for k, v in meta.initial_step_sizes(theta, 0).items()}
                             }.items()))

    def adapted_of(p):
        policy, sizes = meta.split_step_sizes(p)
        return meta.adapt(spec, policy, batches, 0.3 if sizes is None else sizes, first_order,
                          objective)
    adapted = adapted_of(theta)
    meta.record_old(spec, adapted, post)  # the KL's minimum is at theta

    def kl(p):
        return meta.mean_kl(spec, adapted_of(p), post)
    exact = trpo.kl_hessian_product(kl, theta)
    product = trpo.maml_fisher_product(spec, theta, batches, 0.3, post, first_order=first_order,
                                       objective=objective)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = {k: torch.randn(x.shape, generator=gen) for k, x in theta.items()}
        torch.testing.assert_close(flat(product(v)), flat(exact(v)), rtol=1e-8, atol=1e-10)


def test_relu_has_the_values_and_derivatives_of_torch_relu():
    """The policy's ReLU (a product with a mask, for speed) against torch.relu: values, the
    gradient, and second derivatives in forward and reverse mode of an MLP loss, with some
    pre-activations exactly 0 (where both take the derivative 0)."""
    from metarobot.policy import mlp_mean, relu
    h = torch.tensor([-2.0, -0.0, 0.0, 1e-300, 3.5, -1e-300])
    assert torch.equal(relu(h), torch.relu(h))
    gen = torch.Generator().manual_seed(5)
    params = {"layers.0.weight": torch.randn(6, 3, generator=gen),
              "layers.0.bias": torch.randn(6, generator=gen),
              "layers.1.weight": torch.randn(2, 6, generator=gen),
              "layers.1.bias": torch.randn(2, generator=gen)}
    params["layers.0.bias"][:2] = 0.0
    obs = torch.randn(7, 3, generator=gen)
    obs[0] = 0.0  # pre-activations 0 in the first two hidden units
    target = torch.randn(7, 2, generator=gen)

    def reference_mean(p, o):
        hidden = torch.relu(o @ p["layers.0.weight"].T + p["layers.0.bias"])
        return hidden @ p["layers.1.weight"].T + p["layers.1.bias"]

    def loss_of(mean_fn):
        return lambda p: ((mean_fn(p, obs) - target) ** 2 * torch.tanh(mean_fn(p, obs))).sum()
    ours = loss_of(lambda p, o: mlp_mean(p, o, 2, "relu"))
    reference = loss_of(reference_mean)
    assert torch.equal(ours(params), reference(params))
    g_ours, g_ref = torch.func.grad(ours)(params), torch.func.grad(reference)(params)
    assert all(torch.equal(g_ours[k], g_ref[k]) for k in params)
    assert float(g_ours["layers.0.weight"][:2].abs().sum()) > 0  # rows 0, 1 still learn
    v = {k: torch.randn(x.shape, generator=gen) for k, x in params.items()}
    fwd = torch.func.jvp(torch.func.grad(ours), (params,), (v,))[1]
    fwd_ref = torch.func.jvp(torch.func.grad(reference), (params,), (v,))[1]
    rev = torch.func.vjp(torch.func.grad(ours), params)[1](v)[0]
    for k in params:
        torch.testing.assert_close(fwd[k], fwd_ref[k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rev[k], fwd_ref[k], rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_finite_difference_product_of_the_reference_code():
    """The symmetric difference of the KL's gradient through the adaptation: with a small step
    it is the exact KL Hessian product; with the reference's step (1 / |theta| times the
    vector) it is exactly the difference quotient that code computes."""
    spec, theta, pre, post = tiny_problem(seed=6)
    adapted = meta.adapt(spec, theta, [pre], 0.3, False)
    meta.record_old(spec, adapted, post)

    def kl(p):
        return meta.mean_kl(spec, meta.adapt(spec, p, [pre], 0.3, False), post)
    kl_grad = torch.func.grad(kl)
    exact = trpo.kl_hessian_product(kl, theta)
    gen = torch.Generator().manual_seed(7)
    v = {k: torch.randn(x.shape, generator=gen) for k, x in theta.items()}
    small = trpo.finite_difference_product(kl_grad, theta, base_eps=1e-5)
    torch.testing.assert_close(flat(small(v)), flat(exact(v)), rtol=1e-5, atol=1e-7)
    eps = 1.0 / float(flat(theta).norm())
    plus = flat(kl_grad({k: x + eps * v[k] for k, x in theta.items()}))
    minus = flat(kl_grad({k: x - eps * v[k] for k, x in theta.items()}))
    reference = trpo.finite_difference_product(kl_grad, theta)
    torch.testing.assert_close(flat(reference(v)), (plus - minus) / (2 * eps))
    # at that step the quotient is no longer the Hessian's product: the KL is not quadratic
    assert float((flat(reference(v)) - flat(exact(v))).norm()) > 1e-3 * float(
        flat(exact(v)).norm())


@pytest.mark.slow
def test_trpo_step_respects_its_kl_bound_and_improves():
    spec, theta, pre, post = tiny_problem(seed=5, steps=40)
    adapted = meta.adapt(spec, theta, [pre], 0.3, False)
    meta.record_old(spec, adapted, post)

    def loss(p):
        return meta.surrogate(spec, meta.adapt(spec, p, [pre], 0.3, False), post)

    def kl(p):
        return meta.mean_kl(spec, meta.adapt(spec, p, [pre], 0.3, False), post)
    for max_kl in (1e-3, 1e-2):
        new, info = trpo.trpo_step(theta, loss, kl, max_kl=max_kl)
        assert info.accepted
        assert float(kl(new)) <= max_kl + 1e-12
        assert float(loss(new)) < float(loss(theta))
        assert float(kl(new)) > 0.3 * max_kl  # the step uses the bound, not a sliver of it


def test_reptile_update():
    theta = {"w": torch.tensor([1.0, 2.0])}
    adapted = {"w": torch.tensor([[2.0, 2.0], [4.0, 0.0]])}
    new = meta.reptile_update(theta, adapted, 0.5)
    # theta + 0.5 * (mean(phi) - theta) = [1, 2] + 0.5 * ([3, 1] - [1, 2])
    torch.testing.assert_close(new["w"], torch.tensor([2.0, 1.5]))


def test_clipped_update_first_epoch_is_the_policy_gradient_step():
    spec, theta, pre, _ = tiny_problem(seed=4)
    pg = meta.InnerUpdate("pg").step(spec, theta, pre, 0.3, batched=False)
    one = meta.InnerUpdate("clipped", epochs=1, clip=0.2).step(spec, theta, pre, 0.3,
                                                              batched=False)
    for k in pg:
        torch.testing.assert_close(one[k], pg[k], rtol=1e-12, atol=1e-12)
    # per-task parameters in give the same as shared ones
    batched = {k: v.unsqueeze(0).expand(pre.mask.shape[0], *v.shape) for k, v in theta.items()}
    again = meta.InnerUpdate("clipped", epochs=1).step(spec, batched, pre, 0.3, batched=True)
    for k in pg:
        torch.testing.assert_close(again[k], pg[k], rtol=1e-12, atol=1e-12)


def test_clipped_update_lowers_the_clipped_loss_each_epoch_and_stops_at_the_clip():
    spec, theta, pre, _ = tiny_problem(seed=5)
    ntask = pre.mask.shape[0]
    shared = {k: v.unsqueeze(0).expand(ntask, *v.shape) for k, v in theta.items()}
    sample_lp = torch.vmap(spec.log_prob)(shared, pre.obs, pre.actions)

    def losses(p, clip):
        return torch.vmap(lambda q, o, a, adv, m, lp: meta.clipped_loss(
            spec, q, o, a, adv, m, lp, clip))(p, pre.obs, pre.actions, pre.advantages,
                                              pre.mask, sample_lp)
    previous = losses(shared, 0.2)
    for epochs in range(1, 6):
        p = meta.InnerUpdate("clipped", epochs=epochs, clip=0.2).step(spec, theta, pre, 0.005,
                                                                     batched=False)
        now = losses(p, 0.2)
        assert (now <= previous + 1e-12).all()
        previous = now
    # a ratio pushed past 1 + clip in the advantage's favour gives no gradient: with a tiny
    # clip, many epochs of a large step move the policy hardly further than one does
    p1 = meta.InnerUpdate("clipped", epochs=1, clip=1e-3).step(spec, theta, pre, 0.5, False)
    p50 = meta.InnerUpdate("clipped", epochs=50, clip=1e-3).step(spec, theta, pre, 0.5, False)
    free = meta.InnerUpdate("clipped", epochs=50, clip=0.999).step(spec, theta, pre, 0.5, False)
    dist = lambda p: float(flat({k: v - shared[k] for k, v in p.items()}).norm())  # noqa: E731
    assert dist(p50) < 0.5 * dist(free)
    assert dist(p50) > dist(p1) * 0.99


def test_inner_update_refuses_unknown_kinds():
    with pytest.raises(ValueError, match="inner update should be one of"):
        meta.InnerUpdate("adam")


def test_linear_baseline_matches_least_squares():
    rng = np.random.default_rng(0)
    T, ntask, k, od = 12, 2, 3, 4
    obs = rng.normal(size=(T, ntask * k, od)).astype(np.float32) * 5
    returns = rng.normal(size=(T, ntask * k))
    valid = np.ones((T, ntask * k), bool)
    valid[8:, 1] = False
    t_index = np.broadcast_to(np.arange(T, dtype=float)[:, None], (T, ntask * k))
    values = fit_linear_baseline(obs, t_index, returns, valid, ntask)
    for task in range(ntask):
        cols = list(range(task * k, (task + 1) * k))
        rows = []
        targets = []
        for c in cols:
            for t in range(T):
                if valid[t, c]:
                    o = np.clip(obs[t, c].astype(float), -10, 10)
                    al = t / 100
                    rows.append(np.concatenate([o, o ** 2, [al, al ** 2, al ** 3, 1.0]]))
                    targets.append(returns[t, c])
        X, y = np.array(rows), np.array(targets)
        coef = np.linalg.solve(X.T @ X + 1e-5 * np.eye(X.shape[1]), X.T @ y)
        for c in cols:
            for t in range(T):
                o = np.clip(obs[t, c].astype(float), -10, 10)
                al = t / 100
                x = np.concatenate([o, o ** 2, [al, al ** 2, al ** 3, 1.0]])
                assert abs(values[t, c] - x @ coef) < 1e-6 * max(1, abs(x @ coef))


_WIDE_BASELINE = """
import sys
import numpy as np
import torch
torch.set_num_threads(2)  # explicitly: the setting under which torch's batched LU failed
from metarobot.baseline import fit_linear_baseline
rng = np.random.default_rng(1)
T, ntask, k, od = 60, 3, 2, 125  # AntDir's observation: 2 x 125 + 4 = 254 features
obs = rng.normal(size=(T, ntask * k, od)).astype(np.float32)
returns = rng.normal(size=(T, ntask * k))
valid = np.ones((T, ntask * k), bool)
t_index = np.broadcast_to(np.arange(T, dtype=float)[:, None], (T, ntask * k))
values, coeffs = fit_linear_baseline(obs, t_index, returns, valid, ntask, return_all=True)
assert np.isfinite(values).all(), "non-finite baseline values"
for task in range(ntask):
    o = np.clip(obs[:, task * k:(task + 1) * k].astype(float), -10, 10).reshape(-1, od)
    al = np.repeat(np.arange(T) / 100, k)
    X = np.concatenate([o, o ** 2, np.stack([al, al ** 2, al ** 3, np.ones_like(al)], 1)], 1)
    y = returns[:, task * k:(task + 1) * k].reshape(-1)
    ref = np.linalg.solve(X.T @ X + 1e-5 * np.eye(X.shape[1]), X.T @ y)
    err = np.abs(coeffs[task] - ref).max() / np.abs(ref).max()
    assert err < 1e-6, (task, err)
print("ok")
"""


@pytest.mark.slow
def test_linear_baseline_with_many_features_and_set_threads():
    """AntDir's 254 features with torch's thread count set explicitly (as a worker process
    does): every task's fit is finite and numpy's solve of the same normal equations (torch's
    batched LU on the CPU rejected this size under that setting, giving NaN advantages)."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _WIDE_BASELINE], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


def test_rollout_with_one_policy_per_task():
    torch.set_default_dtype(torch.float32)
    fam = metarobot.make_family("HalfCheetahVel", horizon=10)
    tasks = fam.sample_tasks(2, seed=0)
    sim = metarobot.BatchSim(fam, tasks, envs_per_task=2, seed=0)
    policy = metarobot.GaussianMLPPolicy(20, 6)
    a = {k: v.detach().clone() for k, v in policy.params().items()}
    b = {k: v + 0.3 for k, v in a.items()}
    traj = sim.rollout(policy, params=[a, b], deterministic=True)
    obs = torch.from_numpy(traj.observations)
    with torch.no_grad():
        np.testing.assert_allclose(traj.actions[:, :2], policy.mean(obs[:, :2], a).numpy(),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(traj.actions[:, 2:], policy.mean(obs[:, 2:], b).numpy(),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one dict per task"):
        sim.rollout(policy, params=[a])


class BaselineProblem:
    """Random observations and returns of 3 tasks x 2 simulations x 10 steps, and the
    reference code's features and least-squares fit written out in numpy."""

    T, ntask, k, od = 10, 3, 2, 2

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        T, N = self.T, self.ntask * self.k
        self.obs = self.rng.normal(size=(T, N, self.od)).astype(np.float32)
        self.returns = self.rng.normal(size=(T, N))
        self.valid = np.ones((T, N), bool)
        self.t_index = np.broadcast_to(np.arange(T, dtype=float)[:, None], (T, N))
        self.nfeat = 2 * self.od + 4

    def fit(self, **kw):
        return fit_linear_baseline(self.obs, self.t_index, self.returns, self.valid,
                                   self.ntask, **kw)

    def feats(self, sim):
        o = np.clip(self.obs[:, sim].astype(float), -10, 10)
        al = np.arange(self.T)[:, None] / 100
        return np.concatenate([o, o ** 2, al, al ** 2, al ** 3, np.ones((self.T, 1))], axis=1)

    def task_fit(self, task):
        sims = range(task * self.k, (task + 1) * self.k)
        X = np.concatenate([self.feats(c) for c in sims])
        y = np.concatenate([self.returns[:, c] for c in sims])
        return np.linalg.solve(X.T @ X + 1e-5 * np.eye(self.nfeat), X.T @ y)


def test_linear_baseline_in_the_reference_order():
    """carry: each task predicts with the previous task's fit, the first with carry."""
    b = BaselineProblem(1)
    own = b.fit()
    carry = b.rng.normal(size=b.nfeat)
    shifted, fits = b.fit(carry=carry, return_all=True)
    last = fits[-1]
    np.testing.assert_allclose(shifted[:, 0], b.feats(0) @ carry, rtol=1e-10)
    # task 1 with task 0's coefficients
    np.testing.assert_allclose(shifted[:, 2], b.feats(2) @ b.task_fit(0), rtol=1e-6, atol=1e-8)
    # the last task's own fit is the next carry
    np.testing.assert_allclose(last, b.task_fit(2), rtol=1e-6, atol=1e-8)
    assert not np.allclose(own, shifted)


def test_linear_baseline_with_a_prior_per_task():
    """prior: task i predicts with prior[i] (zeros: values 0, the unfitted baseline); its own
    fit comes back for the next batch of the same task; bad shapes raise."""
    b = BaselineProblem(2)
    zero, own = b.fit(prior=np.zeros((b.ntask, b.nfeat)), return_all=True)
    assert np.all(zero == 0.0)
    for task in range(b.ntask):
        np.testing.assert_allclose(own[task], b.task_fit(task), rtol=1e-6, atol=1e-8)
    prior = b.rng.normal(size=(b.ntask, b.nfeat))
    np.testing.assert_allclose(b.fit(prior=prior)[:, 3], b.feats(3) @ prior[1], rtol=1e-10)
    with pytest.raises(ValueError, match=r"prior should have shape \(3, 8\)"):
        b.fit(prior=prior[:2])
    with pytest.raises(ValueError, match="carry or prior"):
        b.fit(prior=prior, carry=np.zeros(b.nfeat))


def test_fresh_baseline_first_batch_advantages_are_centred_returns():
    """prior zeros (the first batch of baseline_fit 'fresh'): the advantages are each task's
    discounted returns-to-go, centred and scaled, as a plain loop computes them."""
    family = metarobot.make_family("HalfCheetahDir", horizon=15)
    tasks = family.sample_tasks(2, seed=4)
    sim = metarobot.BatchSim(family, tasks, 3, seed=5, num_threads=1)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim, hidden_sizes=(8,))
    traj = sim.rollout(policy)
    F = 2 * sim.observation_dim + 4
    batch = samples.process(traj, 2, 0.9, 1.0, prior=np.zeros((2, F)))
    T, N = traj.rewards.shape
    ret = np.zeros((T, N))
    acc = np.zeros(N)
    for t in reversed(range(T)):
        acc = traj.rewards[t].astype(float) + 0.9 * acc
        ret[t] = acc
    for task in range(2):
        r = ret[:, 3 * task:3 * task + 3].reshape(-1)  # time-major within the task
        expect = (r - r.mean()) / (r.std() + 1e-8)
        np.testing.assert_allclose(batch.advantages[task].numpy(), expect, rtol=1e-4, atol=1e-5)
    assert batch.baseline_coeffs.shape == (2, F)
    current = samples.process(traj, 2, 0.9, 1.0)
    assert not np.allclose(current.advantages.numpy(), batch.advantages.numpy())
