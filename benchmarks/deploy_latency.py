"""Latency of one action of an exported policy (one observation in, the controls out), p50 and
p99 in microseconds: the torch module (metarobot.deploy.DeployedPolicy, one thread), ONNX
Runtime (one thread) and the native C++ example program (built here with CMake), for the
cheetah and the ant policies, measured back to back in one run.

    python benchmarks/deploy_latency.py [--calls 20000]
"""

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metarobot.deploy.export import export
from metarobot.deploy.policy import deployed_policy
from metarobot.runs import load_policy

ROOT = Path(__file__).resolve().parent.parent
POLICIES = {"HalfCheetahVel": "checkpoints/HalfCheetahVel.safetensors",
            "AntDir": "checkpoints/AntDir.safetensors"}


def percentiles(seconds):
    us = np.asarray(seconds) * 1e6
    return f"{np.percentile(us, 50):.1f} / {np.percentile(us, 99):.1f}"


def time_calls(fn, calls):
    for _ in range(min(1000, calls)):
        fn()
    out = np.empty(calls)
    for k in range(calls):
        t = time.perf_counter()
        fn()
        out[k] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    import onnxruntime
    torch.set_num_threads(1)
    print("| policy | sizes | torch (us, p50 / p99) | onnxruntime | C++ example (native) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in POLICIES.items():
            path = str(ROOT / path)
            loaded = load_policy(path)
            policy, family = loaded.policy, loaded.family
            module = deployed_policy(policy, None, family).eval()
            obs = torch.zeros(1, policy.obs_dim)
            with torch.inference_mode():
                t_torch = time_calls(lambda: module(obs), args.calls)
            onnx_path = Path(tmp) / f"{name}.onnx"
            export(path, "onnx", onnx_path, overwrite=True)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(onnx_path), options)
            x = obs.numpy()
            t_onnx = time_calls(lambda: session.run(None, {"observation": x}), args.calls)
            native = Path(tmp) / f"{name}-native"
            export(path, "native", native, overwrite=True)
            build = native / "build"
            subprocess.run(["cmake", "-S", str(native), "-B", str(build),
                            "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
            subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
            out = subprocess.run([str(build / "metarobot_policy_example"),
                                  str(native / "policy.bin"), "--bench", str(args.calls)],
                                 check=True, capture_output=True, text=True).stdout.split()
            print(f"| {name} | {' x '.join(map(str, policy.sizes))} | {percentiles(t_torch)} | "
                  f"{percentiles(t_onnx)} | {float(out[1]):.2f} / {float(out[3]):.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
