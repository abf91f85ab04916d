"""
Env steps per second of SACPlus against SB3's SAC, measured in one process with alternating runs.

    python benchmarks/throughput.py                 # headline: Pendulum-v1, batch 256, [256, 256], 1 and 2 threads
    python benchmarks/throughput.py --sweep         # + CartPole-v1 (SACPlus) and batch/width scaling of both

Each run builds a fresh model, collects ``learning_starts`` random steps plus a short warm-up of training (not
timed), then times ``--steps`` environment steps with one gradient update each (train_freq 1, gradient_steps 1).
SB3 SAC and SACPlus runs alternate ``--repeats`` times with identical settings and seeds, so that a slower or
faster phase of the machine hits both. Writes ``benchmarks/results/throughput.csv``, a markdown table
``throughput.md`` and a plot ``throughput.png``.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import platform
import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch as th
from returns import RESULTS_DIR
from stable_baselines3 import SAC

from sac_plus import SACPlus

ALGOS = {"sb3_sac": SAC, "sac_plus": SACPlus}
FIELDS = ["section", "env", "algo", "threads", "batch", "width", "repeat", "steps", "seconds", "steps_per_s"]


def steps_per_second(algo: str, env: str, threads: int, batch: int, width: int, steps: int, seed: int) -> tuple[float, float]:
    """Time ``steps`` training steps of a fresh model after its warm-up; returns (seconds, steps/s)."""
    th.set_num_threads(threads)
    learning_starts = max(batch, 100)
    model = ALGOS[algo](
        "MlpPolicy",
        env,
        batch_size=batch,
        learning_starts=learning_starts,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs=dict(net_arch=[width, width]),
        seed=seed,
        device="cpu",
    )
    model.learn(learning_starts + 50)  # fill the buffer, warm up allocator and caches
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    return seconds, steps / seconds


def run_section(
    rows: list[dict], section: str, env: str, algos: list[str], threads: int, batch: int, width: int, args
) -> None:
    for repeat in range(args.repeats):
        for algo in algos:
            seconds, rate = steps_per_second(algo, env, threads, batch, width, args.steps_for(width), args.seed)
            row = dict(
                section=section,
                env=env,
                algo=algo,
                threads=threads,
                batch=batch,
                width=width,
                repeat=repeat,
                steps=args.steps_for(width),
                seconds=round(seconds, 3),
                steps_per_s=round(rate, 2),
            )
            rows.append(row)
            print(
                f"{section:9s} {env:12s} {algo:9s} threads={threads} batch={batch:5d} width={width:5d} -> {rate:7.1f} steps/s"
            )


def summarise(rows: list[dict]) -> list[dict]:
    """Median steps/s per configuration and algorithm, and the SACPlus / SB3 ratio where both ran."""
    keys = sorted({(r["section"], r["env"], r["threads"], r["batch"], r["width"]) for r in rows}, key=str)
    table = []
    for key in keys:
        medians = {}
        for algo in ALGOS:
            rates = [
                r["steps_per_s"]
                for r in rows
                if (r["section"], r["env"], r["threads"], r["batch"], r["width"]) == key and r["algo"] == algo
            ]
            if rates:
                medians[algo] = statistics.median(rates)
        ratio = medians["sac_plus"] / medians["sb3_sac"] if len(medians) == 2 else None
        table.append(dict(zip(["section", "env", "threads", "batch", "width"], key, strict=True), **medians, ratio=ratio))
    return table


def write_markdown(table: list[dict], path: pathlib.Path, command: str) -> None:
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch {th.__version__}, median of the repeats.",
        "",
        "| section | env | threads | batch | width | SB3 SAC steps/s | SACPlus steps/s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        sb3 = f"{row['sb3_sac']:.1f}" if "sb3_sac" in row else "-"
        plus = f"{row['sac_plus']:.1f}" if "sac_plus" in row else "-"
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        cells = [row["section"], row["env"], row["threads"], row["batch"], row["width"], sb3, plus, ratio]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(table: list[dict], path: pathlib.Path) -> None:
    rows = [r for r in table if "sb3_sac" in r and "sac_plus" in r]
    labels = [f"{r['section']}\n{r['threads']}t b{r['batch']} w{r['width']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    ax.bar([i - 0.2 for i in x], [r["sb3_sac"] for r in rows], width=0.4, label="SB3 SAC")
    ax.bar([i + 0.2 for i in x], [r["sac_plus"] for r in rows], width=0.4, label="SACPlus")
    for i, r in zip(x, rows, strict=True):
        ax.text(i + 0.2, r["sac_plus"], f"{r['ratio']:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("env steps / s (1 update per step)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per run at width 256")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of SB3 SAC and SACPlus (>= 3)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sweep", action="store_true", help="also CartPole-v1 and the batch/width scaling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS_DIR)
    args = parser.parse_args()
    args.steps_for = lambda width: max(50, args.steps * 256 // width)  # keep wide runs affordable

    rows: list[dict] = []
    for threads in args.threads:
        run_section(rows, "headline", "Pendulum-v1", list(ALGOS), threads, 256, 256, args)
    if args.sweep:
        run_section(rows, "discrete", "CartPole-v1", ["sac_plus"], 1, 256, 256, args)
        for batch in (64, 1024):
            run_section(rows, "batch", "Pendulum-v1", list(ALGOS), 1, batch, 256, args)
        run_section(rows, "width", "Pendulum-v1", list(ALGOS), 1, 256, 1024, args)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "throughput.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows)
    command = "python benchmarks/throughput.py" + (" --sweep" if args.sweep else "")
    write_markdown(table, args.out / "throughput.md", command)
    plot(table, args.out / "throughput.png")
    print((args.out / "throughput.md").read_text())


if __name__ == "__main__":
    main()
