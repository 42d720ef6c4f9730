"""GAE and discounted returns against plain Python loops."""

import numpy as np
import pytest
import torch

import metarobot
from metarobot.returns import cuda_available


def reference_gae(reward, value, next_value, done, terminated, gamma, lam):
    """The TorchRL convention, one element at a time in float64."""
    T, B = reward.shape
    adv = np.zeros((T, B))
    for b in range(B):
        a = 0.0
        for t in reversed(range(T)):
            delta = reward[t, b] + gamma * next_value[t, b] * (1 - terminated[t, b]) - value[t, b]
            a = delta + gamma * lam * (1 - done[t, b]) * a
            adv[t, b] = a
    return adv


def reference_returns(reward, done, gamma):
    T, B = reward.shape
    ret = np.zeros((T, B))
    g = np.zeros(B)
    for t in reversed(range(T)):
        g = reward[t] + gamma * (1 - done[t]) * g
        ret[t] = g
    return ret


def random_inputs(T, B, rng, p_done=0.1, p_term=0.5):
    reward = rng.standard_normal((T, B))
    value = rng.standard_normal((T, B))
    next_value = rng.standard_normal((T, B))
    done = rng.random((T, B)) < p_done
    terminated = done & (rng.random((T, B)) < p_term)
    return reward, value, next_value, done, terminated


TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T, B, p_done", [(1, 1, 0.1), (1, 7, 0.5), (50, 1, 0.1), (64, 33, 0.1),
                                          (200, 300, 0.02), (10, 5, 1.0), (40, 9, 0.0)])
def test_gae_matches_reference_numpy(dtype, T, B, p_done):
    rng = np.random.default_rng(T * 1000 + B)
    r, v, nv, d, term = random_inputs(T, B, rng, p_done)
    ref = reference_gae(r, v, nv, d, term, 0.99, 0.95)
    got = metarobot.gae(r.astype(dtype), v.astype(dtype), nv.astype(dtype), d, term, 0.99, 0.95)
    assert got.dtype == dtype and got.shape == (T, B) and isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype])
    ret = metarobot.discounted_returns(r.astype(dtype), d, 0.9)
    np.testing.assert_allclose(ret, reference_returns(r, d, 0.9), rtol=TOL[dtype],
                               atol=TOL[dtype])


def test_worked_example_of_the_docs():
    reward = np.array([1.0, 1.0, 1.0])
    value = np.array([0.0, 2.0, 0.0])
    next_value = np.array([2.0, 4.0, 9.0])
    done = np.array([False, True, True])
    terminated = np.array([False, False, True])
    adv = metarobot.gae(reward, value, next_value, done, terminated, gamma=0.5, lam=1.0)
    np.testing.assert_allclose(adv, [2.5, 1.0, 1.0])
    np.testing.assert_allclose(adv + value, [2.5, 3.0, 1.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gae_torch_tensors_and_non_contiguous(dtype):
    rng = np.random.default_rng(0)
    r, v, nv, d, term = random_inputs(60, 40, rng)
    ref = reference_gae(r, v, nv, d, term, 0.97, 0.9)
    # (B, T) storage transposed to (T, B) views: strides (1, T)
    args = [torch.tensor(x.T.copy()).T for x in (r, v, nv)]
    args = [a.to(dtype) for a in args]
    flags = [torch.tensor(x.T.copy()).T for x in (d, term)]
    assert not args[0].is_contiguous()
    got = metarobot.gae(*args, *flags, 0.97, 0.9)
    assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.device.type == "cpu"
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got.numpy(), ref, rtol=tol, atol=tol)
    # numpy views: every other column, reversed time
    big = [np.asarray(x, np.float64) for x in random_inputs(30, 20, rng)]
    views = [x[::-1, ::2] for x in big]
    ref = reference_gae(*[np.ascontiguousarray(x) for x in views], 0.9, 0.8)
    np.testing.assert_allclose(metarobot.gae(*views, 0.9, 0.8), ref, rtol=1e-12, atol=1e-12)


def test_float_and_integer_flags_are_accepted():
    rng = np.random.default_rng(1)
    r, v, nv, d, term = random_inputs(20, 4, rng)
    ref = reference_gae(r, v, nv, d, term, 0.9, 0.9)
    got = metarobot.gae(r, v, nv, d.astype(np.float32), term.astype(np.int64), 0.9, 0.9)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_large_input_uses_threads_and_matches():
    rng = np.random.default_rng(2)
    r, v, nv, d, term = random_inputs(300, 1000, rng)
    ref = reference_returns(r, d, 0.99)
    for threads in (1, 2, 3):
        got = metarobot.discounted_returns(r, d, 0.99, num_threads=threads)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_empty_inputs():
    z = np.zeros((0, 3))
    out = metarobot.gae(z, z, z, z.astype(bool), z.astype(bool), 0.9, 0.9)
    assert out.shape == (0, 3)


@pytest.mark.parametrize("change, words", [
    (lambda a: {**a, "value": a["value"][:, :3]}, ["value", "shape"]),
    (lambda a: {**a, "value": a["value"].astype(np.float32)}, ["value", "float64", "float32"]),
    (lambda a: {**a, "reward": a["reward"].astype(np.int32)}, ["reward", "float32", "int32"]),
    (lambda a: {**a, "done": torch.tensor(a["done"])}, ["numpy", "torch"]),
    (lambda a: {**a, "gamma": 1.5}, ["gamma", "[0, 1]", "1.5"]),
    (lambda a: {**a, "lam": float("nan")}, ["lam"]),
    (lambda a: {k: (x[None] if isinstance(x, np.ndarray) else x) for k, x in a.items()},
     ["(T, B)", "(1, 5, 4)"]),
    (lambda a: {**a, "reward": [1.0, 2.0]}, ["reward", "list"]),
])
def test_bad_input_raises(change, words):
    rng = np.random.default_rng(0)
    r, v, nv, d, term = random_inputs(5, 4, rng)
    args = dict(reward=r, value=v, next_value=nv, done=d, terminated=term, gamma=0.9, lam=0.9)
    with pytest.raises(ValueError) as err:
        metarobot.gae(**change(args))
    for w in words:
        assert w in str(err.value)


def test_cuda_available_is_a_bool():
    assert isinstance(cuda_available(), bool)


@pytest.mark.skipif(not (torch.cuda.is_available() and cuda_available()), reason="needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T, B", [(1, 1), (7, 3), (1000, 64), (200, 1024), (64, 5000),
                                  (100_000, 1), (1000, 4096), (513, 33), (9, 17),
                                  (256, 65536), (40, 100), (3000, 2)])
def test_gae_cuda_matches_reference(dtype, T, B):
    rng = np.random.default_rng(T + B)
    r, v, nv, d, term = random_inputs(T, B, rng)
    ref = reference_gae(r, v, nv, d, term, 0.99, 0.95) if T * B <= 300_000 else None
    dev = [torch.tensor(x, device="cuda") for x in (r, v, nv)]
    dev = [x.to(dtype) for x in dev]
    flags = [torch.tensor(x, device="cuda") for x in (d, term)]
    got = metarobot.gae(*dev, *flags, 0.99, 0.95)
    assert got.device.type == "cuda" and got.dtype == dtype
    cpu = metarobot.gae(*[x.cpu() for x in dev], *[x.cpu() for x in flags], 0.99, 0.95)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got.cpu().numpy(), cpu.numpy(), rtol=tol, atol=tol)
    if ref is not None:
        np.testing.assert_allclose(got.cpu().numpy(), ref, rtol=tol, atol=tol)
    ret = metarobot.discounted_returns(dev[0], flags[0], 0.9)
    np.testing.assert_allclose(ret.cpu().numpy(), reference_returns(r, d, 0.9), rtol=tol,
                               atol=tol * 10)


def test_out_argument_is_written_and_checked():
    rng = np.random.default_rng(3)
    r, v, nv, d, term = random_inputs(30, 6, rng)
    out = np.full((30, 6), np.nan)
    got = metarobot.gae(r, v, nv, d, term, 0.9, 0.8, out=out)
    assert got is out
    np.testing.assert_allclose(out, reference_gae(r, v, nv, d, term, 0.9, 0.8), rtol=1e-12)
    with pytest.raises(ValueError, match="out should be a numpy float64 array of shape"):
        metarobot.gae(r, v, nv, d, term, 0.9, 0.8, out=np.zeros((30, 6), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        metarobot.gae(r, v, nv, d, term, 0.9, 0.8, out=np.zeros((6, 30)).T)
    t_out = torch.zeros(30)
    metarobot.discounted_returns(torch.tensor(r[:, 0]).float(), torch.tensor(d[:, 0]), 0.9,
                                 out=t_out)
    np.testing.assert_allclose(t_out.numpy(), reference_returns(r[:, :1], d[:, :1], 0.9)[:, 0],
                               rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_returns_and_out_match_reference(dtype):
    rng = np.random.default_rng(4)
    r, v, nv, d, term = random_inputs(70, 13, rng, p_done=0.1)
    tr = torch.tensor(r, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    got = metarobot.discounted_returns(tr, torch.tensor(d), 0.97)
    assert got.dtype == dtype and got.shape == (70, 13)
    np.testing.assert_allclose(got.numpy(), reference_returns(r, d, 0.97), rtol=tol, atol=tol)
    out = torch.full((70, 13), float("nan"), dtype=dtype)
    res = metarobot.gae(tr, torch.tensor(v, dtype=dtype), torch.tensor(nv, dtype=dtype),
                        torch.tensor(d), torch.tensor(term), 0.97, 0.9, out=out)
    assert res is out
    np.testing.assert_allclose(out.numpy(), reference_gae(r, v, nv, d, term, 0.97, 0.9),
                               rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("change, words", [
    (lambda a: {**a, "value": a["value"][:, :3]}, ["value", "shape"]),
    (lambda a: {**a, "value": a["value"].double()}, ["value", "float32", "float64"]),
    (lambda a: {**a, "reward": a["reward"].int()}, ["reward", "float32", "int32"]),
    (lambda a: {**a, "done": a["done"].numpy()}, ["numpy", "torch"]),
    (lambda a: {**a, "gamma": 1.5}, ["gamma", "[0, 1]", "1.5"]),
    (lambda a: {**a, "lam": float("nan")}, ["lam"]),
    (lambda a: {**a, "out": torch.zeros(5, 4, dtype=torch.float64)}, ["out", "float32"]),
    (lambda a: {**a, "out": torch.zeros(4, 5).T}, ["C-contiguous"]),
])
def test_bad_torch_input_raises(change, words):
    rng = np.random.default_rng(0)
    r, v, nv, d, term = random_inputs(5, 4, rng)
    args = dict(reward=torch.tensor(r, dtype=torch.float32),
                value=torch.tensor(v, dtype=torch.float32),
                next_value=torch.tensor(nv, dtype=torch.float32), done=torch.tensor(d),
                terminated=torch.tensor(term), gamma=0.9, lam=0.9)
    with pytest.raises(ValueError) as err:
        metarobot.gae(**change(args))
    for w in words:
        assert w in str(err.value)
