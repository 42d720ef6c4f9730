"""The learner on a GPU (skipped without one): CUDA advantages inside a CUDA graph and on a
side stream, one meta-iteration on CUDA against the same iteration on the CPU, and how often
the outer step waits on the device. Device selection and its errors are tested everywhere."""

import pytest
import torch

import metarobot
import metarobot.cli
from metarobot import device as device_module
from metarobot.families import make_family
from metarobot.returns import cuda_available
from metarobot.config import TrainConfig, make_policy
from metarobot.train import initial_theta, meta_iteration, train

GPU = torch.cuda.is_available() and cuda_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a GPU")


def test_device_resolution_and_errors(tmp_path):
    assert device_module.resolve("cpu").type == "cpu"
    assert device_module.resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device should be one of"):
        device_module.resolve("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no GPU; use device 'cpu' or 'auto'"):
            device_module.resolve("cuda")
        # a configuration names a device; whether this machine has it is asked where it is
        # used, before anything is written
        config = TrainConfig(device="cuda")
        with pytest.raises(ValueError, match="sees no GPU"):
            train(config, tmp_path / "run", progress=False)
        assert not (tmp_path / "run").exists()
        with pytest.raises(SystemExit):  # the flag asks this machine: refused as it parses
            metarobot.cli.main(["train", "--out", "/nonexistent", "--device", "cuda"])
    with pytest.raises(ValueError, match="device should be one of"):
        TrainConfig(device="cuda:x")


def test_to_device_on_cpu_is_the_batch_itself():
    from metarobot import samples
    batch = samples.TaskBatch(obs=torch.zeros(2, 3, 4), actions=torch.zeros(2, 3, 1),
                           advantages=torch.zeros(2, 3), mask=torch.ones(2, 3),
                           returns=torch.zeros(2))
    assert device_module.to_device(batch, torch.device("cpu")) is batch


def inputs(T, B, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r, v, nv = (torch.randn(T, B, generator=g) for _ in range(3))
    d = torch.rand(T, B, generator=g) < 0.02
    term = d & (torch.rand(T, B, generator=g) < 0.5)
    return [x.to(device) for x in (r, v, nv, d, term)]


@needs_gpu
@pytest.mark.parametrize("T, B", [(200, 1024), (1000, 64), (3000, 2)])
def test_gae_in_a_captured_cuda_graph_equals_the_eager_call(T, B):
    args = inputs(T, B, "cuda")
    eager = metarobot.gae(*args, 0.99, 0.95)
    static = [x.clone() for x in args]
    out = torch.empty_like(eager)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        metarobot.gae(*static, 0.99, 0.95, out=out)  # warm-up before capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        metarobot.gae(*static, 0.99, 0.95, out=out)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
    # new data in the graph's inputs: the replay follows it
    fresh = inputs(T, B, "cuda", seed=1)
    for s, f in zip(static, fresh):
        s.copy_(f)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, metarobot.gae(*fresh, 0.99, 0.95))


@needs_gpu
def test_gae_runs_on_the_callers_stream():
    args = inputs(500, 300, "cuda")
    eager = metarobot.gae(*args, 0.99, 0.95)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = metarobot.gae(*args, 0.99, 0.95)
    side.synchronize()
    assert torch.equal(got, eager)


@needs_gpu
def test_fisher_product_graph_equals_the_eager_product():
    def fn(v):
        return torch.tanh(v) * 2.0 + v.sum()
    x = torch.randn(1000, device="cuda")
    replay = device_module.capture(fn, x)
    for seed in range(3):
        v = torch.randn(1000, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        assert torch.equal(replay(v), fn(v))


def small_config(**kw):
    base = dict(family="HalfCheetahDir", meta_batch_size=6, trajectories_per_task=4,
                family_overrides={"horizon": 50}, iterations=2, threads=2, seed=1)
    base.update(kw)
    return TrainConfig(**base)


@needs_gpu
@pytest.mark.parametrize("algo", ["maml-trpo", "fomaml-trpo", "reptile", "trpo", "ppo"])
def test_an_iteration_on_cuda_equals_the_cpu_iteration(algo):
    """Same tasks, same samples (sampling is on CPU threads from the same parameters): the new
    parameters agree to float32 rounding, relative to the size of the step."""
    results = {}
    for device in ("cpu", "cuda"):
        config = small_config(algo=algo, device=device)
        family = make_family(config.family, **config.family_overrides)
        policy = make_policy(config, family)
        theta = {n: p.to(device) for n, p in initial_theta(config, family, policy).items()}
        new, result = meta_iteration(config, family, policy, theta, 0)
        results[device] = (theta, new, result)
    theta, cpu, r_cpu = results["cpu"]
    _, gpu, r_gpu = results["cuda"]
    assert r_cpu.pre_return == r_gpu.pre_return  # the same samples before adaptation
    for k in cpu:
        step = float((cpu[k] - theta[k]).abs().max())
        diff = float((cpu[k] - gpu[k].cpu()).abs().max())
        assert diff <= 1e-3 * max(step, 1e-6) + 1e-6, (k, diff, step)
        assert gpu[k].device.type == "cuda"


@needs_gpu
def test_outer_step_waits_on_the_device_a_bounded_number_of_times():
    """Host synchronisations of one MAML-TRPO outer step on CUDA: the gradient's loss, the
    step length, and one per line-search candidate (the algorithm needs those); nothing per
    conjugate-gradient iteration."""
    config = small_config(device="cuda", max_backtracks=15)
    family = make_family(config.family, **config.family_overrides)
    policy = make_policy(config, family)
    theta = {n: p.detach().clone().cuda() for n, p in policy.params().items()}
    meta_iteration(config, family, policy, theta, 0)  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            new, result = meta_iteration(config, family, policy, theta, 0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    backtracks = int(result.info["backtracks"]) + 1
    # sampling's parameter copies (2 rounds x parameters), the pinned batch copies, the loss
    # reads of TRPO (its gradient and step length: 3) and one per line-search candidate
    assert len(syncs) <= 2 * len(theta) + 3 + backtracks + 8, [str(w.message) for w in syncs]
