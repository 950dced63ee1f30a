"""What a local Ray costs two one-thread trainers on this machine, apart from autoprune.

Times one synthetic training loop (a small conv net, one torch thread) alone, two side by side as
spawned processes (what ``--executor processes`` does), and two side by side as Ray tasks on a
local Ray started as ``--executor ray`` starts it; then the CPU seconds Ray's own processes
(raylet, GCS, log monitor, dashboard agent, idle workers) take while idle. Run it on a quiet
machine: it is the baseline for the throughput section's Ray x2 figure (docs/benchmarks.md).

    python benchmarks/ray_overhead.py               # about a minute
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import time


def train(steps: int) -> float:
    """Seconds for ``steps`` SGD steps of a two-conv net on a 64x16x32x32 batch, one thread."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(64, 16, 32, 32)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    return time.perf_counter() - start


def _child(queue: multiprocessing.Queue, steps: int) -> None:
    queue.put(train(steps))


def ray_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of every process whose command line names ray, by pid (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if "ray" in cmd.lower() and int(pid) != os.getpid():
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="SGD steps per training loop")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="how long Ray's idle CPU is watched")
    args = parser.parse_args(argv)
    print(f"command: python benchmarks/ray_overhead.py --steps {args.steps} --idle-seconds {args.idle_seconds:g}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"alone                 {train(args.steps):6.2f} s")

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    children = [ctx.Process(target=_child, args=(queue, args.steps)) for _ in range(2)]
    for child in children:
        child.start()
    side = sorted(queue.get() for _ in children)
    for child in children:
        child.join()
    print(f"2 spawned processes   {side[0]:6.2f} s, {side[1]:6.2f} s")

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        task = ray.remote(num_cpus=1)(train)
        ray.get([task.remote(2), task.remote(2)])  # both workers started and torch imported
        side = sorted(ray.get([task.remote(args.steps), task.remote(args.steps)]))
        print(f"2 Ray tasks           {side[0]:6.2f} s, {side[1]:6.2f} s")
        before = ray_cpu_seconds()
        time.sleep(args.idle_seconds)
        after = ray_cpu_seconds()
        used = sum(after[pid] - before[pid] for pid in after if pid in before)
        print(f"Ray idle              {100 * used / args.idle_seconds:5.1f}% of one core (all its processes)")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
