"""Does the val_loss after a prefix of the run rank the candidates as the final val_loss does?

Evidence for (or against) screening evolve candidates on a shortened run: over the committed full-length run
records (results/cpu/*.json: val_loss on the whole validation set every 1000 iterations, val_loss_curve), the
Spearman rank correlation between the val_loss at iteration K and the final val_loss (iteration 10001), for
every run, for variants (mean over their seeds), and for the better half of the runs (where a search's
selection happens); and how often the K-prefix's best 3 runs hold the final best one.

    python benchmarks/screening_rank.py [--records results/cpu] [--prefixes 1000 2000 3000 5000 7000]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
FULL = 10001


def load(folder: Path) -> list[dict]:
    """(name, persona, seed, curve {iteration: val_loss}, final) of every finished full-length run; one run
    recorded twice (the same seed and curve, under a persona's old and new name) counts once."""
    runs, seen = [], set()
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("status") != "ok" or r.get("max_iters") != FULL or not r.get("val_loss_curve"):
            continue
        curve = {int(k): float(v) for k, v in r["val_loss_curve"]}
        key = (r["seed"], tuple(sorted(curve.items())))
        if key in seen:
            continue
        seen.add(key)
        runs.append({"name": path.stem, "persona": r["persona"], "seed": r["seed"], "curve": curve, "final": float(r["val_loss"])})
    return runs


def rho(x, y) -> float:
    return float(spearmanr(x, y).statistic)


def analyse(runs: list[dict], prefixes) -> list[dict]:
    rows = []
    by_variant = defaultdict(list)
    for r in runs:
        by_variant[r["persona"]].append(r)
    median = float(np.median([r["final"] for r in runs]))
    better = [r for r in runs if r["final"] <= median]
    for k in prefixes:
        have = [r for r in runs if k in r["curve"]]
        if len(have) < len(runs):
            raise SystemExit(f"error: {len(runs) - len(have)} run(s) have no val_loss at iteration {k}")
        variants = list(by_variant.values())
        prefix_top3 = sorted(runs, key=lambda r: r["curve"][k])[:3]
        best = min(runs, key=lambda r: r["final"])
        rows.append({
            "prefix": k,
            "runs": len(runs), "rho_runs": rho([r["curve"][k] for r in runs], [r["final"] for r in runs]),
            "variants": len(variants),
            "rho_variants": rho([np.mean([r["curve"][k] for r in v]) for v in variants], [np.mean([r["final"] for r in v]) for v in variants]),
            "better_half": len(better), "rho_better_half": rho([r["curve"][k] for r in better], [r["final"] for r in better]),
            "final_best_in_prefix_top3": best in prefix_top3,
        })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default=str(ROOT / "results" / "cpu"), help="folder of run records (*.json)")
    ap.add_argument("--prefixes", type=int, nargs="+", default=[1000, 2000, 3000, 5000, 7000, 9000])
    args = ap.parse_args(argv)
    folder = Path(args.records)
    if not folder.is_dir():
        print(f"error: --records {folder} is not a folder", file=sys.stderr)
        return 2
    runs = load(folder)
    if len(runs) < 4:
        print(f"error: {len(runs)} full-length run records with val_loss curves in {folder}; need at least 4", file=sys.stderr)
        return 2
    print(f"{len(runs)} full-length runs ({FULL} iterations) in {folder}")
    print("| prefix (iterations) | Spearman, runs | Spearman, variants (seed means) | Spearman, better half of the runs | final best run among the prefix's best 3 |")
    print("| --- | --- | --- | --- | --- |")
    for row in analyse(runs, args.prefixes):
        print(f"| {row['prefix']} | {row['rho_runs']:.3f} (n={row['runs']}) | {row['rho_variants']:.3f} (n={row['variants']}) | "
              f"{row['rho_better_half']:.3f} (n={row['better_half']}) | {'yes' if row['final_best_in_prefix_top3'] else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
