"""Time one MAML-TRPO meta-iteration at the paper's settings, its phases side by side for
several variants of the same iteration (same tasks, same samples, same parameters):

    python benchmarks/outer_step.py --compare relu --families HalfCheetahVel HalfCheetahDir
    python benchmarks/outer_step.py --compare device --families HalfCheetahDir AntDir

--compare relu: the policy's ReLU (a product with a mask, metarobot.policy.relu) against
torch.relu. --compare device: the learner on the CPU (torch's threads) against CUDA, with and
without the Fisher-vector product replayed as a CUDA graph, and on CUDA the kernel launches and
host synchronisations of one iteration (torch.profiler). Variants alternate, `--repeats`
times each; the table gives the mean seconds of each phase, the outer step's speed-up over the
first variant, and how far apart the variants' new parameters are.
"""

import argparse
import json
import time
from typing import Callable, Dict, List, Tuple

import torch

from metarobot import policy as policy_module
from metarobot.families import make_family
from metarobot.config import TrainConfig, make_policy
from metarobot.train import initial_theta, meta_iteration

PHASES = ("sampling", "returns", "inner", "outer")


def relu_variants() -> Dict[str, Tuple[dict, Callable[[], None], Callable[[], None]]]:
    """name -> (TrainConfig settings, set-up, tear-down). The activation table the pure MLP
    functions look up at call time: swapping its "relu" entry swaps the implementation
    everywhere in the iteration (the C++ sampler has its own ReLU)."""
    code = policy_module._ACTIVATIONS["relu"][1]

    def use(fn):
        return lambda: policy_module._ACTIVATIONS.__setitem__("relu", (fn, code))
    restore = use(policy_module.relu)
    return {"torch.relu": ({}, use(torch.relu), restore),
            "metarobot relu": ({}, use(policy_module.relu), restore)}


def device_variants() -> Dict[str, Tuple[dict, Callable[[], None], Callable[[], None]]]:
    nothing = lambda: None  # noqa: E731
    out = {f"cpu ({torch.get_num_threads()} threads)": ({"device": "cpu"}, nothing, nothing)}
    if torch.cuda.is_available():
        out["cuda, CUDA graph"] = ({"device": "cuda", "cuda_graphs": True}, nothing, nothing)
        out["cuda, no graph"] = ({"device": "cuda", "cuda_graphs": False}, nothing, nothing)
    return out


def launches_and_syncs(config: TrainConfig, family, policy, theta, iteration: int) -> str:
    """Kernel launches and host synchronisations (device-to-host copies and stream or device
    synchronisations) of one iteration, by torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        meta_iteration(config, family, policy, theta, iteration)
        torch.cuda.synchronize()
    launches = syncs = 0
    for event in prof.events():
        name = event.name
        if name in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel",
                    "cudaGraphLaunch"):
            launches += 1
        elif name in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                      "cudaEventSynchronize") or (name.startswith("cudaMemcpy")
                                                  and "Async" not in name):
            syncs += 1
    return f"{launches} launches, {syncs} syncs"


def run(family_name: str, variants, repeats: int, iteration: int, threads: int,
        profile: bool, settings: Dict[str, object]) -> List[str]:
    base_config = TrainConfig(**{"family": family_name, "iterations": iteration + 1,
                                 "threads": threads, **settings})
    family = make_family(base_config.family, **base_config.family_overrides)
    policy = make_policy(base_config, family)
    theta0 = initial_theta(base_config, family, policy)
    times = {name: {k: [] for k in PHASES + ("total",)} for name in variants}
    results, counts = {}, {}
    for _ in range(repeats):
        for name, (variant, setup, teardown) in variants.items():
            config = TrainConfig(**{**base_config.to_dict(), **variant})
            theta = {k: v.to(config.device) for k, v in theta0.items()}
            setup()
            try:
                if config.device != "cpu":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                new_theta, result = meta_iteration(config, family, policy, theta, iteration)
                if config.device != "cpu":
                    torch.cuda.synchronize()
                times[name]["total"].append(time.perf_counter() - start)
                if profile and config.device != "cpu" and name not in counts:
                    counts[name] = launches_and_syncs(config, family, policy, theta, iteration)
            finally:
                teardown()
            for k in PHASES:
                times[name][k].append(result.times[k])
            results[name] = {k: v.cpu() for k, v in new_theta.items()}

    def mean(xs):
        return sum(xs) / len(xs)
    names = list(variants)
    first = results[names[0]]
    scale = max(float((first[k] - theta0[k]).abs().max()) for k in first)
    base = mean(times[names[0]]["outer"])
    rows = []
    for name in names:
        t = times[name]
        diff = max(float((results[name][k] - first[k]).abs().max()) for k in first)
        rows.append(f"| {family_name} | {name} | "
                    + " | ".join(f"{mean(t[k]):.3f}" for k in PHASES + ("total",))
                    + f" | {base / mean(t['outer']):.2f}x | "
                    + (f"{diff:.1e} (step {scale:.1e})" if name != names[0] else "")
                    + f" | {counts.get(name, '')} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", choices=("relu", "device"), default="relu")
    parser.add_argument("--families", nargs="+", default=["HalfCheetahVel", "HalfCheetahDir"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iteration", type=int, default=0,
                        help="which iteration's tasks and samples (from the initial policy)")
    parser.add_argument("--threads", type=int, default=0, help="simulation threads; 0: all")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip counting CUDA launches and synchronisations")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="TrainConfig settings, e.g. algo='\"ppo\"' meta_batch_size=20")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats should be >= 1, got {args.repeats}")
    settings: Dict[str, object] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes KEY=JSON, got {item!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value  # a bare word: a string
    print("settings:", settings or "defaults (the paper's)")
    variants = relu_variants() if args.compare == "relu" else device_variants()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {gpu}")
    print("| family | variant | sampling s | returns s | inner s | outer s | total s | "
          "outer speed-up | new parameters' largest difference | CUDA work per iteration |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for family in args.families:
        for row in run(family, variants, args.repeats, args.iteration, args.threads,
                       not args.no_profile, settings):
            print(row, flush=True)


if __name__ == "__main__":
    main()
