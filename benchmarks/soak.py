"""Soak: resident memory of a long quickstart-scale diffusion training, sampled while it runs.

    python benchmarks/soak.py [--minutes 30] [--every 30] [--workers 2] [--out outputs/soak]
                              [-- extra train.py overrides]

Starts ``python train.py experiment=quickstart_ldm`` with a step budget it never reaches and ``trainer.max_time`` set to
``--minutes`` (a soak is about time, not about a result), with ``--workers`` DataLoader workers that
persist across epochs, and every ``--every`` seconds reads the resident set size (``VmRSS`` in
``/proc/<pid>/status``, MiB) of the training process and of each of its descendants (the data-loader
workers). Writes ``<out>/rss.csv`` (one row per sample) and prints a table and the RSS growth of the
training process between the first and the last third of the run (MiB per 10 minutes, from a least-squares
line), so that a leak shows as a slope well above zero. Linux only (reads /proc).

The latents must exist (``make quickstart`` writes ``data/synthetic_latents``), or pass
``--data DIR``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process in MiB (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (children of all its threads, recursively)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def slope_per_10_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per 10 minutes."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 600.0 * sum((t - mt) * (r - mr) for t, r in points) / var if var else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between RSS samples")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers of the training loader")
    parser.add_argument("--data", default=str(REPO / "data" / "synthetic_latents"))
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "soak")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides")
    args = parser.parse_args(argv)
    if not (Path(args.data) / "latents.json").is_file():
        parser.error(f"--data {args.data}: no latents.json (run `make quickstart` or data_prep/encode_latents.py)")
    args.out.mkdir(parents=True, exist_ok=True)
    minutes = int(args.minutes)
    seconds = int(round((args.minutes - minutes) * 60))
    command = [
        sys.executable, str(REPO / "train.py"), "experiment=quickstart_ldm", "logger=csv",
        f"data.data_dir={args.data}", f"data.num_workers={args.workers}", "data.persistent_workers=true",
        "trainer.max_steps=1000000", f"+trainer.max_time=00:00:{minutes:02d}:{seconds:02d}",
        f"hydra.run.dir={args.out / 'run'}", *args.overrides,
    ]
    print(" ".join(command), flush=True)
    log = open(args.out / "train.log", "w")
    child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    start = time.monotonic()
    rows: list[dict[str, float]] = []
    print(f"{'min':>6} {'train MiB':>10} {'workers':>8} {'workers MiB':>12}", flush=True)
    try:
        while child.poll() is None:
            main_rss = rss_mib(child.pid)
            kids = [(k, rss_mib(k)) for k in descendants(child.pid)]
            kids = [(k, r) for k, r in kids if r is not None]
            if main_rss is not None:
                row = {"seconds": round(time.monotonic() - start, 1), "train_mib": round(main_rss, 1),
                       "workers": len(kids), "workers_mib": round(sum(r for _, r in kids), 1)}
                rows.append(row)
                print(f"{row['seconds'] / 60:6.1f} {row['train_mib']:10.1f} {row['workers']:8d} "
                      f"{row['workers_mib']:12.1f}", flush=True)
            time.sleep(args.every)
    finally:
        if child.poll() is None:
            child.terminate()
        child.wait()
        log.close()
    with open(args.out / "rss.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["seconds", "train_mib", "workers", "workers_mib"])
        writer.writeheader()
        writer.writerows(rows)
    if len(rows) >= 6:
        third = len(rows) // 3
        settled = rows[third:]  # the first third holds start-up, first validation and worker start
        train = slope_per_10_min([(r["seconds"], r["train_mib"]) for r in settled])
        workers = slope_per_10_min([(r["seconds"], r["workers_mib"]) for r in settled])
        counts = sorted({int(r["workers"]) for r in settled})
        print(f"after {rows[third]['seconds'] / 60:.1f} min: training process {settled[0]['train_mib']:.0f} -> "
              f"{settled[-1]['train_mib']:.0f} MiB (slope {train:+.1f} MiB / 10 min), workers "
              f"{settled[0]['workers_mib']:.0f} -> {settled[-1]['workers_mib']:.0f} MiB (slope {workers:+.1f} "
              f"MiB / 10 min), worker counts seen {counts}")
    print(f"train.py exit status {child.returncode}; log {args.out / 'train.log'}; samples {args.out / 'rss.csv'}")
    return int(child.returncode != 0)


if __name__ == "__main__":
    raise SystemExit(main())
