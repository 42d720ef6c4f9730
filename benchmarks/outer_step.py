"""Time one MAML-TRPO meta-iteration at the paper's settings with the policy's ReLU (a product
with a mask, metarobot.policy.relu) against torch.relu, side by side on the same data.

    python benchmarks/outer_step.py --families HalfCheetahVel HalfCheetahDir --repeats 3

Both variants run the same iteration (same tasks, same samples) from the same parameters,
alternating, `--repeats` times each; the table gives the mean seconds of each phase, the ratio of
outer steps, and how far apart the two variants' new parameters are (rounding only: the two
ReLUs have the same derivatives).
"""

import argparse
import time

import torch

from metarobot import policy as policy_module
from metarobot.families import make_family
from metarobot.train import TrainConfig, make_policy, meta_iteration

# The activation table the pure MLP functions look up at call time; swapping its "relu" entry
# swaps the implementation everywhere in the iteration (the C++ sampler has its own ReLU).
VARIANTS = {"torch.relu": torch.relu, "metarobot relu": policy_module.relu}
PHASES = ("sampling", "returns", "inner", "outer")


def run(family_name: str, repeats: int, iteration: int, threads: int) -> list:
    config = TrainConfig(family=family_name, iterations=iteration + 1, threads=threads)
    family = make_family(config.family, **config.family_overrides)
    policy = make_policy(config, family)
    theta = {n: p.detach().clone() for n, p in policy.params().items()}
    code = policy_module._ACTIVATIONS["relu"][1]
    times = {name: {k: [] for k in PHASES + ("total",)} for name in VARIANTS}
    results = {}
    try:
        for _ in range(repeats):
            for name, fn in VARIANTS.items():
                policy_module._ACTIVATIONS["relu"] = (fn, code)
                start = time.perf_counter()
                new_theta, result = meta_iteration(config, family, policy, theta, iteration)
                times[name]["total"].append(time.perf_counter() - start)
                for k in PHASES:
                    times[name][k].append(result.times[k])
                results[name] = new_theta
    finally:
        policy_module._ACTIVATIONS["relu"] = (policy_module.relu, code)
    a, b = (results[name] for name in VARIANTS)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    scale = max(float((a[k] - theta[k]).abs().max()) for k in a)

    def mean(xs):
        return sum(xs) / len(xs)
    rows = []
    base = mean(times["torch.relu"]["outer"])
    for name in VARIANTS:
        t = times[name]
        rows.append(f"| {family_name} | {name} | "
                    + " | ".join(f"{mean(t[k]):.2f}" for k in PHASES + ("total",))
                    + f" | {base / mean(t['outer']):.2f}x | "
                    + (f"{diff:.1e} (step {scale:.1e})" if name != "torch.relu" else "")
                    + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["HalfCheetahVel", "HalfCheetahDir"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iteration", type=int, default=0,
                        help="which iteration's tasks and samples (from the initial policy)")
    parser.add_argument("--threads", type=int, default=0, help="simulation threads; 0: all")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats should be >= 1, got {args.repeats}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| family | ReLU | sampling s | returns s | inner s | outer s | total s | outer speed-up "
          "| new parameters' largest difference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for family in args.families:
        for row in run(family, args.repeats, args.iteration, args.threads):
            print(row, flush=True)


if __name__ == "__main__":
    main()
