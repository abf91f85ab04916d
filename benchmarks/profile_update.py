"""
Where the time of one training env step goes, for SACPlus and SB3's SAC: ``torch.profiler``'s self CPU time per
operation and input shape over the same number of env steps, in one process, in throughput.py's headline setting
(Pendulum-v1, batch 256, ``[256, 256]``, one update per env step).

    python benchmarks/profile_update.py                  # 1 thread, 200 env steps each
    python benchmarks/profile_update.py --threads 2 --steps 300

For each algorithm: the wall time per env step under the profiler, the part spent inside operations (the rest is
Python, the environment and dispatch), the part in matrix products, and the operations that take the most time.
The profiler adds a few microseconds to each operation, so its times are above throughput.py's; what this
measures is the split. Writes ``benchmarks/results/profile_<cpu>_<threads>t.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time

import torch as th
from returns import RESULTS_DIR
from throughput import cpu_description, slug, warmed_model
from torch.profiler import ProfilerActivity, profile

ALGOS = ("sac_plus", "sb3_sac")
# the operations that are matrix products (oneDNN's linear included)
PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise")


# profiled env steps per profiler session: one long session slows SB3's autograd steps down as it goes (~3x over 200
# steps here), so the steps are profiled in short windows whose results are summed
WINDOW = 20


@dataclasses.dataclass
class OpTime:
    """One operation and input shape: its calls and self CPU microseconds, summed over the windows."""

    key: str
    shapes: str
    calls: int = 0
    self_us: float = 0.0


def profile_steps(algo: str, threads: int, steps: int, seed: int) -> tuple[float, list[OpTime]]:
    """Wall seconds of ``steps`` training env steps of a warmed-up model under the profiler, and its operations."""
    model = warmed_model(algo, "Pendulum-v1", threads, 256, 256, seed)  # sets the thread count
    seconds, ops = 0.0, {}
    for start in range(0, steps, WINDOW):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            begin = time.perf_counter()
            model.learn(min(WINDOW, steps - start), reset_num_timesteps=False)
            seconds += time.perf_counter() - begin
        for event in prof.key_averages(group_by_input_shape=True):
            op = ops.setdefault((event.key, str(event.input_shapes)), OpTime(event.key, str(event.input_shapes)))
            op.calls += event.count
            op.self_us += event.self_cpu_time_total
    return seconds, list(ops.values())


def section(algo: str, seconds: float, ops: list[OpTime], steps: int, top: int) -> list[str]:
    """Markdown lines for one algorithm: the split of a step, then the ``top`` operations by self time."""
    total = sum(op.self_us for op in ops) / steps
    products = sum(op.self_us for op in ops if op.key in PRODUCTS) / steps
    wall = seconds / steps * 1e6
    lines = [
        f"### {algo}",
        "",
        f"Per env step: {wall / 1e3:.2f} ms wall under the profiler; {total / 1e3:.2f} ms inside operations, of "
        f"which {products / 1e3:.2f} ms in matrix products ({products / wall:.0%} of the step) and "
        f"{(total - products) / 1e3:.2f} ms in the others; {(wall - total) / 1e3:.2f} ms outside operations (Python, "
        "the env, dispatch).",
        "",
        "| operation | input shapes | calls per step | us per step | us per call |",
        "|---|---|---:|---:|---:|",
    ]
    for op in sorted(ops, key=lambda op: -op.self_us)[:top]:
        shapes = op.shapes.replace("|", "/")
        per_step, per_call = op.self_us / steps, op.self_us / op.calls
        lines.append(f"| `{op.key}` | `{shapes}` | {op.calls / steps:.1f} | {per_step:.1f} | {per_call:.1f} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200, help="profiled env steps per algorithm")
    parser.add_argument("--top", type=int, default=25, help="operations listed per algorithm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if args.steps < 1 or args.threads < 1:
        parser.error("--steps and --threads must be >= 1")

    cpu = cpu_description()
    command = f"python benchmarks/profile_update.py --threads {args.threads} --steps {args.steps}"
    lines = [f"Command: `{command}`  ", f"CPU: {cpu[0]} (flags: {cpu[1]}); torch {th.__version__}", ""]
    for algo in ALGOS:
        seconds, ops = profile_steps(algo, args.threads, args.steps, args.seed)
        lines += section(algo, seconds, ops, args.steps, args.top)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"profile_{slug(cpu[0])}_{args.threads}t.md"
    path.write_text("\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
