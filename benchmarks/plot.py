"""
Learning curves and result tables from the CSVs of ``benchmarks/returns.py``.

For each environment: one PNG (``benchmarks/results/returns_<env>.png``) with one curve per (algo, variant),
the mean over seeds of the deterministic evaluation return, and a band of ± one standard deviation over seeds;
and a markdown table of the final evaluation, mean ± std over seeds, printed (and written with ``--table``).

Only complete runs (the final evaluation reached the budget) are used unless ``--include-partial`` is given.

Examples::

    python benchmarks/plot.py                                  # every returns_*.csv
    python benchmarks/plot.py --env CartPole-v1 --table /tmp/cartpole.md
    python benchmarks/plot.py --env Pendulum-v1 --select sac_plus/default sac_plus/pytorch_init \\
        --suffix ablation --title "Pendulum-v1: init and depth ablation"
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
import pandas as pd
from returns import RESULTS_DIR, csv_path_for


def load(path: pathlib.Path, include_partial: bool = False) -> pd.DataFrame:
    df = pd.read_csv(path)
    if df.empty:
        return df
    df["variant"] = df["variant"].astype(str)
    keys = ["env", "algo", "variant", "seed", "budget"]
    if not include_partial:
        last = df.groupby(keys)["timesteps"].transform("max")
        df = df[last >= df["budget"]]
    # one row per (run, timesteps), in case a run was logged twice
    return df.drop_duplicates(subset=[*keys, "timesteps"], keep="last")


def label(algo: str, variant: str) -> str:
    return algo if variant == "default" else f"{algo}/{variant}"


def select(df: pd.DataFrame, wanted: list[str] | None) -> pd.DataFrame:
    """Keep ``algo`` or ``algo/variant`` entries named in ``wanted`` (all when None), in that order."""
    if not wanted:
        return df
    names = df["algo"] + "/" + df["variant"]
    mask = names.isin(wanted) | df["algo"].isin(wanted)
    return df[mask]


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted so that each algo's default comes first, then its variants by name: stable colours and tables."""
    order = df["algo"] + ("/0" + df["variant"]).where(df["variant"] == "default", "/1" + df["variant"])
    return df.assign(_order=order).sort_values(["_order", "seed", "timesteps"]).drop(columns="_order")


def curves(df: pd.DataFrame) -> dict[tuple[str, str, int], pd.DataFrame]:
    """Per (algo, variant, budget): timesteps, mean and std over seeds, number of seeds."""
    out = {}
    for (algo, variant, budget), group in df.groupby(["algo", "variant", "budget"], sort=False):
        per_step = group.groupby("timesteps")["mean_return"]
        out[(algo, variant, int(budget))] = pd.DataFrame(
            {"mean": per_step.mean(), "std": per_step.std(ddof=0), "n": per_step.count()}
        ).reset_index()
    return out


def final_table(df: pd.DataFrame) -> pd.DataFrame:
    """The final evaluation of each run, then mean ± std over seeds per (algo, variant, budget)."""
    keys = ["env", "algo", "variant", "seed", "budget"]
    ordered = df.sort_values("timesteps", kind="stable")
    finals = ordered.groupby(keys, sort=False).tail(1)
    # the last three evaluations of each run: less sensitive to one unlucky final evaluation
    last3 = ordered.groupby(keys, sort=False).tail(3).groupby(keys, sort=False)["mean_return"].mean()
    rows = []
    for (env, algo, variant, budget), group in finals.groupby(["env", "algo", "variant", "budget"], sort=False):
        values = group["mean_return"].to_numpy()
        tails = last3.loc[[(env, algo, variant, seed, budget) for seed in group["seed"]]].to_numpy()
        rows.append(
            {
                "env": env,
                "algo": algo,
                "variant": variant,
                "budget": int(budget),
                "seeds": len(values),
                "final_mean": float(np.mean(values)),
                "final_std": float(np.std(values)),
                "last3_mean": float(np.mean(tails)),
                "last3_std": float(np.std(tails)),
                "worst_seed": float(np.min(values)),
                "best_seed": float(np.max(values)),
                "wall_min": float(group["wall_time"].mean() / 60),
                "per_seed": ", ".join(f"{v:.0f}" for v in values[np.argsort(group["seed"].to_numpy())]),
            }
        )
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| env | algo | variant | budget | seeds | final return, mean ± std over seeds "
        "| worst / best seed | per seed | last 3 evaluations, mean ± std over seeds | minutes per run |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.env} | {r.algo} | {r.variant} | {r.budget:,} | {r.seeds} | {r.final_mean:.1f} ± {r.final_std:.1f} "
            f"| {r.worst_seed:.1f} / {r.best_seed:.1f} | {r.per_seed} | {r.last3_mean:.1f} ± {r.last3_std:.1f} "
            f"| {r.wall_min:.1f} |"
        )
    return "\n".join(lines)


def plot(df: pd.DataFrame, out: pathlib.Path, title: str, bar: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for (algo, variant, _budget), c in curves(df).items():
        n = int(c["n"].max())
        (line,) = ax.plot(c["timesteps"], c["mean"], label=f"{label(algo, variant)} ({n} seeds)")
        ax.fill_between(c["timesteps"], c["mean"] - c["std"], c["mean"] + c["std"], alpha=0.2, color=line.get_color())
    if bar is not None:
        ax.axhline(bar, color="grey", linestyle="--", linewidth=1, label=f"bar {bar:g}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (deterministic, mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="append", help="environment id (repeatable); default: every returns_*.csv")
    parser.add_argument("--results-dir", type=pathlib.Path, default=RESULTS_DIR)
    parser.add_argument("--select", nargs="+", help="only these algo or algo/variant entries, e.g. sb3_dqn sac_plus/default")
    parser.add_argument("--budget", type=int, help="only runs with this budget")
    parser.add_argument("--seed-list", help="only these seeds, comma-separated (e.g. 0,1,2 to compare equal seeds)")
    parser.add_argument("--suffix", help="write returns_<env>_<suffix>.png instead of returns_<env>.png")
    parser.add_argument("--title", help="plot title (default: the env id)")
    parser.add_argument("--bar", type=float, help="draw the bar as a horizontal line")
    parser.add_argument("--table", type=pathlib.Path, help="also write the markdown table to this file")
    parser.add_argument("--include-partial", action="store_true", help="also use runs that have not reached their budget")
    args = parser.parse_args(argv)

    if args.env:
        paths = [csv_path_for(env, args.results_dir) for env in args.env]
    else:
        paths = sorted(args.results_dir.glob("returns_*.csv"))
    tables = []
    for path in paths:
        if not path.exists():
            print(f"{path} does not exist", file=sys.stderr)
            continue
        df = ordered(select(load(path, args.include_partial), args.select))
        if args.budget is not None:
            df = df[df["budget"] == args.budget]
        if args.seed_list:
            df = df[df["seed"].isin([int(x) for x in args.seed_list.split(",")])]
        if df.empty:
            print(f"{path}: no complete runs", file=sys.stderr)
            continue
        env = path.stem[len("returns_") :]
        name = f"returns_{env}_{args.suffix}.png" if args.suffix else f"returns_{env}.png"
        plot(df, args.results_dir / name, args.title or env, args.bar)
        print(f"wrote {args.results_dir / name}", file=sys.stderr)
        tables.append(final_table(df))
    if not tables:
        return 1
    text = markdown(pd.concat(tables, ignore_index=True))
    print(text)
    if args.table:
        args.table.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
