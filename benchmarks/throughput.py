"""
Env steps per second of SACPlus against SB3's SAC, measured in one process with interleaved runs.

    python benchmarks/throughput.py                 # headline: Pendulum-v1, batch 256, [256, 256], 1 and 2 threads
    python benchmarks/throughput.py --sweep         # + CartPole-v1 (SACPlus) and batch/width scaling of both

Each repeat builds a fresh model of each algorithm, collects ``learning_starts`` random steps plus a short warm-up
of training (not timed), then times ``--steps`` environment steps with one gradient update each (train_freq 1,
gradient_steps 1), in ``--blocks`` blocks that take turns between the models (identical settings and seeds), so
that a slower or faster phase of the machine hits all of them: the ratio reported is the median over the
``--repeats`` repeats of the ratio within each repeat. SACPlus with bfloat16 products (``matmul_dtype="bfloat16"``)
runs as its own algorithm, ``sac_plus_bf16``, reported beside the float32 default. The CPU (model name and the ISA
flags that decide which kernels are fast: AVX2, AVX-512, AVX512-BF16, AMX), the matrix-product plans
sac_plus.linear's probe chose and the gradient path (sac_plus.fused or autograd) the first update measured are
recorded with the figures. Writes ``benchmarks/results/throughput_<cpu>.csv``, a markdown table ``throughput_<cpu>.md``
and a plot ``throughput_<cpu>.png``, one set per CPU model.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import platform
import re
import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch as th
from returns import RESULTS_DIR
from stable_baselines3 import SAC

from sac_plus import SACPlus
from sac_plus.fused import gradient_path_choices
from sac_plus.linear import kernel_choices

ALGOS = {"sb3_sac": SAC, "sac_plus": SACPlus, "sac_plus_bf16": SACPlus}
EXTRA_POLICY_KWARGS = {"sac_plus_bf16": dict(matmul_dtype="bfloat16")}
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description() -> tuple[str, str]:
    """The CPU's model name and its relevant ISA flags, from /proc/cpuinfo (``platform`` elsewhere)."""
    try:
        info = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE)
    present = set(flags.group(1).split()) if flags else set()
    return (model.group(1).strip() if model else platform.machine()), " ".join(f for f in ISA_FLAGS if f in present)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


FIELDS = ["section", "env", "algo", "threads", "batch", "width", "repeat", "steps", "seconds", "steps_per_s"]


def warmed_model(algo: str, env: str, threads: int, batch: int, width: int, seed: int):
    """A fresh model of ``algo`` that has filled its buffer and run a few updates (not timed)."""
    th.set_num_threads(threads)
    learning_starts = max(batch, 100)
    model = ALGOS[algo](
        "MlpPolicy",
        env,
        batch_size=batch,
        learning_starts=learning_starts,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs=dict(net_arch=[width, width], **EXTRA_POLICY_KWARGS.get(algo, {})),
        seed=seed,
        device="cpu",
    )
    model.learn(learning_starts + 50)  # fill the buffer, warm up allocator and caches
    return model


def interleaved_seconds(models: dict[str, object], steps: int, blocks: int) -> dict[str, float]:
    """
    Seconds each model takes for ``steps`` training steps, timed in ``blocks`` blocks that take turns between the
    models (the first model of each round rotates): a phase of the machine that lasts seconds then hits every
    model about equally, where back-to-back runs of ~20 s each let it land on one.
    """
    names = list(models)
    seconds = dict.fromkeys(names, 0.0)
    sizes = [steps // blocks + (1 if block < steps % blocks else 0) for block in range(blocks)]
    for block, size in enumerate(sizes):
        for offset in range(len(names)):
            name = names[(block + offset) % len(names)]
            start = time.perf_counter()
            models[name].learn(size, reset_num_timesteps=False)  # type: ignore[attr-defined]
            seconds[name] += time.perf_counter() - start
    return seconds


def run_section(
    rows: list[dict], section: str, env: str, algos: list[str], threads: int, batch: int, width: int, args
) -> None:
    steps = args.steps_for(width)
    for repeat in range(args.repeats):
        models = {algo: warmed_model(algo, env, threads, batch, width, args.seed) for algo in algos}
        for algo, seconds in interleaved_seconds(models, steps, min(args.blocks, steps)).items():
            rate = steps / seconds
            row = dict(
                section=section,
                env=env,
                algo=algo,
                threads=threads,
                batch=batch,
                width=width,
                repeat=repeat,
                steps=steps,
                seconds=round(seconds, 3),
                steps_per_s=round(rate, 2),
            )
            rows.append(row)
            print(
                f"{section:9s} {env:12s} {algo:9s} threads={threads} batch={batch:5d} width={width:5d} -> {rate:7.1f} steps/s"
            )


def paired_ratio(rows: list[dict], algo: str) -> float | None:
    """Median over the repeats of ``algo``'s steps/s over SB3 SAC's in the same repeat: the runs of a repeat
    are interleaved (:func:`interleaved_seconds`), so a slow or fast phase of a shared machine, which moves a run
    by more than the difference being measured, cancels out of each ratio."""
    rates = {(r["algo"], r["repeat"]): r["steps_per_s"] for r in rows}
    repeats = [repeat for a, repeat in rates if a == algo and ("sb3_sac", repeat) in rates]
    ratios = [rates[algo, repeat] / rates["sb3_sac", repeat] for repeat in repeats]
    return statistics.median(ratios) if ratios else None


def summarise(rows: list[dict]) -> list[dict]:
    """Median steps/s per configuration and algorithm, and the median paired SACPlus / SB3 ratio where both ran."""
    keys = sorted({(r["section"], r["env"], r["threads"], r["batch"], r["width"]) for r in rows}, key=str)
    table = []
    for key in keys:
        runs = [r for r in rows if (r["section"], r["env"], r["threads"], r["batch"], r["width"]) == key]
        medians = {}
        for algo in ALGOS:
            rates = [r["steps_per_s"] for r in runs if r["algo"] == algo]
            if rates:
                medians[algo] = statistics.median(rates)
        ratios = dict(ratio=paired_ratio(runs, "sac_plus"), ratio_bf16=paired_ratio(runs, "sac_plus_bf16"))
        table.append(dict(zip(["section", "env", "threads", "batch", "width"], key, strict=True), **medians, **ratios))
    return table


def write_markdown(
    table: list[dict], path: pathlib.Path, command: str, cpu: tuple[str, str], plans: list[dict], paths: list[dict]
) -> None:
    def cell(row: dict, key: str, digits: int) -> str:
        return f"{row[key]:.{digits}f}" if row.get(key) is not None else "-"

    lines = [
        f"Command: `{command}`  ",
        f"CPU: {cpu[0]} (flags: {cpu[1] or 'none of ' + ', '.join(ISA_FLAGS)}), {os.cpu_count()} logical core(s); "
        f"torch {th.__version__}; steps/s: median of the repeats; ratio: median of the repeats' ratios (each repeat "
        "times the algorithms in interleaved blocks).",
        "",
        "| section | env | threads | batch | width | SB3 SAC steps/s | SACPlus steps/s | ratio | bf16 steps/s | bf16 ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        cells = [row["section"], row["env"], row["threads"], row["batch"], row["width"]]
        cells += [cell(row, "sb3_sac", 1), cell(row, "sac_plus", 1), cell(row, "ratio", 2)]
        cells += [cell(row, "sac_plus_bf16", 1), cell(row, "ratio_bf16", 2)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Matrix-product plans the probe chose (forward, input gradient, weight gradient):", ""]
    lines += [
        f"- `[{p['rows']} x {p['in_features']}] -> {p['out_features']}`{' +relu' if p['relu'] else ''}, "
        f"{p['threads']} thread(s): {p['forward']}, {p['grad_input']}, {p['grad_weight']}"
        for p in plans
        if p["rows"] > 1
    ]
    lines += ["", "Gradient path the measurement chose (sac_plus.fused against autograd, time of one update's gradients):", ""]
    lines += [
        f"- batch {p['batch_size']}, {p['threads']} thread(s), {p['device']}: {'fused' if p['fused'] else 'autograd'} "
        f"(autograd {p['times_us']['autograd'] / 1e3:.2f} ms, fused {p['times_us']['fused'] / 1e3:.2f} ms)"
        for p in paths
    ]
    path.write_text("\n".join(lines) + "\n")


def plot(table: list[dict], path: pathlib.Path) -> None:
    rows = [r for r in table if r["ratio"] is not None]
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
    parser.add_argument("--repeats", type=int, default=5, help="fresh models of SB3 SAC and SACPlus timed side by side")
    parser.add_argument("--blocks", type=int, default=10, help="blocks per repeat, taking turns between the models")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sweep", action="store_true", help="also CartPole-v1 and the batch/width scaling")
    parser.add_argument("--no-bf16", action="store_true", help="leave out SACPlus with bfloat16 products")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if min(args.steps, args.repeats, args.blocks, *args.threads) < 1:
        parser.error("--steps, --repeats, --blocks and --threads must be >= 1")
    args.steps_for = lambda width: max(50, args.steps * 256 // width)  # keep wide runs affordable

    algos = [a for a in ALGOS if not (args.no_bf16 and a == "sac_plus_bf16")]
    rows: list[dict] = []
    for threads in args.threads:
        run_section(rows, "headline", "Pendulum-v1", algos, threads, 256, 256, args)
    if args.sweep:
        run_section(rows, "discrete", "CartPole-v1", ["sac_plus"], 1, 256, 256, args)
        for batch in (64, 1024):
            run_section(rows, "batch", "Pendulum-v1", algos, 1, batch, 256, args)
        run_section(rows, "width", "Pendulum-v1", algos, 1, 256, 1024, args)

    cpu = cpu_description()
    name = f"throughput_{slug(cpu[0])}"
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{name}.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[*FIELDS, "cpu", "cpu_flags"])
        writer.writeheader()
        writer.writerows(dict(row, cpu=cpu[0], cpu_flags=cpu[1]) for row in rows)
    choices = dict(products=kernel_choices(), gradient_paths=gradient_path_choices())
    (args.out / f"{name}_plans.json").write_text(json.dumps(choices, indent=1) + "\n")
    table = summarise(rows)
    command = "python benchmarks/throughput.py" + (" --sweep" if args.sweep else "")
    write_markdown(table, args.out / f"{name}.md", command, cpu, kernel_choices(), gradient_path_choices())
    plot(table, args.out / f"{name}.png")
    print((args.out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
