"""
Env steps per second of SACPlus's CrossQ preset against sb3-contrib's ``CrossQ`` at equal width, in one process.

    python benchmarks/crossq_speed.py                      # HalfCheetah-v5, critics of 256, 1 thread
    python benchmarks/crossq_speed.py --widths 256 1024 --threads 1 2
    python benchmarks/crossq_speed.py --simba               # + the SIMBA preset, its blocks of the same width

Both get the same hyperparameters: sb3-contrib's ``CrossQ`` defaults (batch 256, learning rate 1e-3, actor every
3rd update, Adam beta1 0.5, batch renormalisation momentum 0.01, warm-up 100k), actor [256, 256], critics
``[width, width]``; ``sac_plus.presets.CROSSQ`` differs from those defaults only in ``learning_starts`` and the
critic width, both set here. With ``--simba``, ``sac_plus.presets.SIMBA`` runs too, with an actor block of 128
and two critic blocks of ``width`` (its published width is 512). Each run builds a fresh model, collects the
random start plus a short warm-up of training (not timed), then times ``--steps`` env steps with one critic update
each; the algorithms alternate ``--repeats`` times, so that a slower phase of the machine hits all. Writes
``benchmarks/results/crossq_speed_<cpu>.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time

import torch as th
from returns import RESULTS_DIR
from throughput import cpu_description, slug

from sac_plus import SACPlus, presets

ALGOS = ("sb3_crossq", "sac_plus_crossq", "sac_plus_simba")
FIELDS = ["env", "algo", "threads", "width", "repeat", "steps", "seconds", "steps_per_s"]


def build(algo: str, env: str, width: int, seed: int, learning_starts: int):
    net_arch = dict(pi=[256, 256], qf=[width, width])
    if algo == "sb3_crossq":
        from sb3_contrib import CrossQ

        return CrossQ(
            "MlpPolicy", env, learning_starts=learning_starts, policy_kwargs=dict(net_arch=net_arch), seed=seed, device="cpu"
        )
    if algo == "sac_plus_simba":
        kwargs = presets.get("SIMBA")
        kwargs["policy_kwargs"]["net_arch"] = dict(pi=[128], qf=[width, width])
    else:
        kwargs = presets.get("CROSSQ")
        kwargs["policy_kwargs"]["net_arch"] = net_arch
    kwargs.update(learning_starts=learning_starts, seed=seed, device="cpu")
    return SACPlus(env=env, **kwargs)


def steps_per_second(algo: str, env: str, threads: int, width: int, steps: int, seed: int) -> tuple[float, float]:
    th.set_num_threads(threads)
    learning_starts = 256
    model = build(algo, env, width, seed, learning_starts)
    model.learn(learning_starts + 60)  # fill the buffer, warm up allocator, caches and kernel probes
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    return seconds, steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=600, help="timed steps per run at width 256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--widths", type=int, nargs="+", default=[256])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--simba", action="store_true", help="also time the SIMBA preset")
    args = parser.parse_args()
    algos = ALGOS if args.simba else ALGOS[:2]

    rows = []
    for threads in args.threads:
        for width in args.widths:
            steps = max(60, args.steps * 256 // width)
            for repeat in range(args.repeats):
                for algo in algos:
                    seconds, rate = steps_per_second(algo, args.env, threads, width, steps, args.seed)
                    rows.append(dict(env=args.env, algo=algo, threads=threads, width=width, repeat=repeat, steps=steps,
                                     seconds=round(seconds, 3), steps_per_s=round(rate, 2)))  # fmt: skip
                    print(f"{algo:16s} threads={threads} width={width:5d} -> {rate:7.1f} steps/s", flush=True)

    cpu = cpu_description()
    name = f"crossq_speed_{slug(cpu[0])}"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / f"{name}.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[*FIELDS, "cpu", "cpu_flags"])
        writer.writeheader()
        writer.writerows(dict(row, cpu=cpu[0], cpu_flags=cpu[1]) for row in rows)
    lines = [
        f"Command: `python benchmarks/crossq_speed.py --env {args.env} --threads {' '.join(map(str, args.threads))} "
        f"--widths {' '.join(map(str, args.widths))}{' --simba' if args.simba else ''}`  ",
        f"CPU: {cpu[0]} (flags: {cpu[1]}); torch {th.__version__}; median of {args.repeats} alternating repeats.",
        "",
        "| env | threads | critic width | sb3-contrib CrossQ steps/s | SACPlus CROSSQ steps/s | ratio |"
        + (" SACPlus SIMBA steps/s | ratio |" if args.simba else ""),
        "|---|---|---|---|---|---|" + ("---|---|" if args.simba else ""),
    ]
    for threads in args.threads:
        for width in args.widths:
            medians = {
                algo: statistics.median(
                    r["steps_per_s"] for r in rows if (r["algo"], r["threads"], r["width"]) == (algo, threads, width)
                )
                for algo in algos
            }
            line = f"| {args.env} | {threads} | {width} | {medians['sb3_crossq']:.1f} |"
            for algo in algos[1:]:
                line += f" {medians[algo]:.1f} | {medians[algo] / medians['sb3_crossq']:.2f} |"
            lines.append(line)
    (RESULTS_DIR / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
