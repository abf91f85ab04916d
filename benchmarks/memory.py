"""
Memory of a 1M-transition replay buffer for HalfCheetah-v5: SB3 SAC's buffer, SACPlus's default
buffer and SACPlus with ``DeviceReplayBuffer`` on the CPU.

    python benchmarks/memory.py

Each variant is measured in a fresh process: the model is built as a user would build it (``buffer_size=1_000_000``,
``device="cpu"``), then every stored array/tensor is written to end to end (``fill``), which commits its pages.
Reported per variant: the exact bytes of the storage (``nbytes`` summed over observations, next_observations,
actions, rewards, dones, timeouts) and the growth of the process's resident memory (RSS, /proc/self/status) from
before building the model to after building it and to after filling the buffer (after a warm-up model with a
1-transition buffer, so that torch's own start-up memory is not counted). numpy's and the CPU
DeviceReplayBuffer's zeros are mapped lazily, so the RSS after construction is small and the memory is committed
as transitions are written; the RSS growth also holds the networks and their optimizers (a few MB).
Writes ``benchmarks/results/memory.csv`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys

from returns import RESULTS_DIR

ENV_ID = "HalfCheetah-v5"
BUFFER_SIZE = 1_000_000
FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
VARIANTS = {
    "sb3_sac": "stable_baselines3.SAC (its default ReplayBuffer)",
    "sac_plus": "SACPlus, default buffer (SB3's ReplayBuffer)",
    "sac_plus_device": "SACPlus, replay_buffer_class=DeviceReplayBuffer (device='cpu')",
}
COLUMNS = [
    "variant",
    "description",
    "buffer_class",
    "obs_dtype",
    "action_dtype",
    "bytes_per_transition",
    "nbytes",
    *(f"nbytes_{field}" for field in FIELDS),
    "rss_after_construction_mb",
    "rss_after_fill_mb",
]


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(variant: str) -> dict:
    """Build the model of ``variant`` with a 1M buffer, fill the buffer, and return the measurements."""
    import gymnasium as gym
    import numpy as np
    import torch as th
    from stable_baselines3 import SAC

    from sac_plus import SACPlus
    from sac_plus.buffers import DeviceReplayBuffer

    th.set_num_threads(1)
    env = gym.make(ENV_ID)
    kwargs = dict(buffer_size=BUFFER_SIZE, device="cpu", seed=0)
    if variant == "sb3_sac":
        algo = SAC
    else:
        algo = SACPlus
        if variant == "sac_plus_device":
            kwargs["replay_buffer_class"] = DeviceReplayBuffer
    # warm-up: a model with a 1-transition buffer loads and initialises torch's libraries and allocators, so that
    # the growth measured below is the buffer's (plus the few MB of a second set of networks and optimizers)
    warm_up = algo("MlpPolicy", env, **{**kwargs, "buffer_size": 1})
    before = rss_bytes()
    model = algo("MlpPolicy", env, **kwargs)
    after_construction = rss_bytes()
    buffer = model.replay_buffer
    arrays = {field: getattr(buffer, field) for field in FIELDS}
    for array in arrays.values():  # write every element: every page is committed
        if isinstance(array, np.ndarray):
            array.fill(1)
        else:
            array.fill_(1)
    after_fill = rss_bytes()
    del warm_up
    nbytes = {field: int(array.nbytes) for field, array in arrays.items()}
    total = sum(nbytes.values())
    return {
        "variant": variant,
        "description": VARIANTS[variant],
        "buffer_class": type(buffer).__name__,
        "obs_dtype": str(arrays["observations"].dtype).replace("torch.", ""),
        "action_dtype": str(arrays["actions"].dtype).replace("torch.", ""),
        "bytes_per_transition": total // (buffer.buffer_size * buffer.n_envs),
        "nbytes": total,
        **{f"nbytes_{field}": value for field, value in nbytes.items()},
        "rss_after_construction_mb": round((after_construction - before) / 1e6, 1),
        "rss_after_fill_mb": round((after_fill - before) / 1e6, 1),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        f"Replay buffer of {BUFFER_SIZE:,} transitions for {ENV_ID} on the CPU (`python benchmarks/memory.py`)",
        "",
        "| variant | buffer class | obs dtype | action dtype | bytes/transition | storage nbytes (MB) "
        "| RSS growth after construction (MB) | RSS growth after filling (MB) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['description']} | {row['buffer_class']} | {row['obs_dtype']} | {row['action_dtype']} "
            f"| {row['bytes_per_transition']} | {row['nbytes'] / 1e6:.1f} | {row['rss_after_construction_mb']} "
            f"| {row['rss_after_fill_mb']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=list(VARIANTS), help="measure one variant in this process (JSON out)")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant)))
        return
    rows = []
    for variant in VARIANTS:  # a fresh process each: RSS growth is not blurred by an earlier buffer
        result = subprocess.run([sys.executable, __file__, "--variant", variant], check=True, capture_output=True, text=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / "memory.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(markdown(rows))
    print(f"\nwritten: {RESULTS_DIR / 'memory.csv'}")


if __name__ == "__main__":
    main()
