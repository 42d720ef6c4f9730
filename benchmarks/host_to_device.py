"""How a sampled batch reaches the GPU: host-to-device copies of float32 tensors of a batch's
sizes, three ways side by side (median of --repeats, each synchronised):

    python benchmarks/host_to_device.py

  pin + async: x.pin_memory().to(cuda, non_blocking=True) (metarobot.device.to_device's way)
  pageable:    x.to(cuda) from ordinary memory
  staged:      a copy into a pinned buffer allocated once, then .to(cuda, non_blocking=True)
"""

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--megabytes", type=float, nargs="+", default=[1, 16, 70, 280])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a GPU")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"{torch.get_num_threads()} threads")
    print("| MB | pin + async ms | pageable ms | staged ms | pageable GB/s | staged GB/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mb in args.megabytes:
        x = torch.randn(int(mb * 2**20 / 4))
        buf = torch.empty_like(x).pin_memory()
        pin = timed(lambda: x.pin_memory().to("cuda", non_blocking=True), args.repeats)
        page = timed(lambda: x.to("cuda"), args.repeats)
        staged = timed(lambda: buf.copy_(x).to("cuda", non_blocking=True), args.repeats)
        gb = x.numel() * 4 / 1e9
        print(f"| {mb:g} | {pin * 1e3:.2f} | {page * 1e3:.2f} | {staged * 1e3:.2f} | "
              f"{gb / page:.1f} | {gb / staged:.1f} |", flush=True)


if __name__ == "__main__":
    main()
