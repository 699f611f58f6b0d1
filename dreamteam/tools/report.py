"""The results report: run records -> RESULTS.md, results.json and PNG plots, beside the runs unless --out.

    dreamteam report runs/ [--out DIR]      (writes runs/RESULTS.md, runs/results.json, runs/*.png)

The committed docs/RESULTS.md is regenerated from the committed runs only, by an explicit
`dreamteam report results/cpu --out docs ...` (README "Measured").

Records are grouped by (device type, max_iters): one table per group, so that devices are never mixed and
smoke runs (--max-iters) never sit beside full protocol runs. Within a group there is one row per persona:
the number of seeds and mean ± sample standard deviation (ddof=1) of each metric. "vs baseline" is the
difference of mean val_loss, and whether the persona is below the baseline by more than the two standard
deviations combined (std + std_baseline), the criterion of docs/personas.md.

Where a group holds several ok records of one persona and seed (reruns under another version), the latest
(by record name, which ends in its start time) counts and the others are listed as superseded. A row
averages only runs of one config and recipe: the registry's for that label where a run of it exists (a
`persona@KEY=VALUE` run of a setting since registered counts as the persona's), else the newest run's.
The output depends only on the records and the registry: everything is sorted and no time is written but
the records' own.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from dreamteam import protocol, registry
from dreamteam.tools import speed
from dreamteam.tools.bench import BenchError, base_label, device_type, read_records, same_spec, spec_fields
from dreamteam.runs import finite, max_load

METRICS = ("val_loss", "val_loss_best", "best_vloss", "fitness", "elapsed_min", "ms_per_iter")
DECIMALS = {"val_loss": 4, "val_loss_best": 4, "best_vloss": 4, "fitness": 4, "elapsed_min": 3, "ms_per_iter": 2}
BASELINE = "baseline"


# ---------------------------------------------------------------- numbers


def summarize(values) -> dict:
    """n, mean, sample std (ddof=1; None with fewer than 2 values), min, max of the finite numbers in `values`."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def versus(row: dict, reference: dict) -> dict:
    """Difference of mean val_loss to `reference` and whether it is below by more than std + std_reference
    (None where either side has fewer than 2 seeds, so no standard deviation)."""
    a, b = row["metrics"]["val_loss"], reference["metrics"]["val_loss"]
    if a["mean"] is None or b["mean"] is None:
        return {"delta_val_loss": None, "threshold": None, "below": None}
    delta = a["mean"] - b["mean"]
    if a["std"] is None or b["std"] is None:
        return {"delta_val_loss": delta, "threshold": None, "below": None}
    threshold = a["std"] + b["std"]
    return {"delta_val_loss": delta, "threshold": threshold, "below": -delta > threshold}


def _order(x: tuple[str, dict]):
    """(path, record) by start time: the end of a record's name (persona_seedS_device_Nit_YYYYMMDD-HHMMSS)."""
    name = str(x[1].get("name", ""))
    stamp = re.search(r"(\d{8}-\d{6})$", name)
    return (stamp.group(1) if stamp else "", name, x[0])


def _registered_spec(label: str):
    """The config and recipe the registry gives `label` now (a persona, or an ablation variant
    'persona-component'), or None for a label it does not know (a `--set` variant, a test's toy persona)."""
    if "@" in label:
        return None
    try:
        return spec_fields(registry.from_label(label))
    except registry.UnknownPersonaError:
        return None


def _current_spec(name: str, by_persona: dict[str, list]):
    """The config and recipe that `name`'s row averages: the registry's, where some run of `name` or of a
    `name@KEY=VALUE` label was trained with it; otherwise that of `name`'s newest own run (None without one).
    So a persona retuned in the registry is shown with its new recipe as soon as one run of that recipe
    exists, under either label (bench does not train the persona again for a `--set` run of it), and with
    its old recipe until then."""
    registered = _registered_spec(name)
    if registered is not None:
        runs = [r for label, found in by_persona.items() if base_label(label) == name for _, r in found]
        if any(same_spec(r, registered) for r in runs):
            return registered
    own = by_persona.get(name)
    return max(own, key=_order)[1] if own else None


def _with_relabelled_runs(by_persona: dict[str, list], current: dict[str, dict]) -> dict[str, list]:
    """by_persona with each persona's list extended by its `persona@KEY=VALUE` records (`dreamteam bench --set`)
    trained with the persona's current config and recipe (`current`, from `_current_spec`): a setting since
    registered was run as the persona itself (bench skips the persona's run for it). They stay in their
    tuning rows as well."""
    out = {name: list(found) for name, found in by_persona.items()}
    for name, found in by_persona.items():
        base = base_label(name)
        if base == name or current.get(base) is None:
            continue
        matching = [(rel, r) for rel, r in found if same_spec(r, current[base])]
        if matching:
            out.setdefault(base, []).extend(matching)
    return out


def _latest_per_seed(records: list[tuple[str, dict]], current: dict) -> tuple[list[tuple[str, dict]], list[str]]:
    """One record per seed: the latest by record name, among the records trained with the config and recipe
    `current` (`_current_spec`: a retuned persona is not averaged with its old recipe); also the relative
    paths of the superseded ones."""
    kept_spec = [(rel, rec) for rel, rec in records if same_spec(rec, current)]
    superseded = [rel for rel, rec in records if not same_spec(rec, current)]
    by_seed: dict[int, list[tuple[str, dict]]] = {}
    for rel, rec in kept_spec:
        by_seed.setdefault(int(rec["seed"]), []).append((rel, rec))
    kept = []
    for seed in sorted(by_seed):
        runs = sorted(by_seed[seed], key=_order)
        kept.append(runs[-1])
        superseded += [rel for rel, _ in runs[:-1]]
    return kept, sorted(superseded)


def _ordered(personas: dict) -> list[str]:
    """Baseline first, then by mean val_loss (no value last), then by name."""
    def key(name):
        mean = personas[name]["metrics"]["val_loss"]["mean"]
        return (name != BASELINE, mean is None, mean if mean is not None else 0.0, name)

    return sorted(personas, key=key)


def _ablations(personas: dict, specs: dict) -> tuple[dict[str, list[str]], list[str]]:
    """(persona -> its ablation variants present in the group, the stale variants). A variant is a row named
    'persona-component' (as registry.build labels it) for a component the persona's records switch on, and
    counts only when it was trained as the persona's current config and recipe less that component; one
    trained against an earlier config of the persona (a retuned persona) is stale, not compared."""
    found, stale = {}, []
    for name in sorted(personas):
        variants = []
        for c in personas[name]["components"]:
            config = dict(specs[name]["config"], components=[k for k in personas[name]["components"] if k != c])
            less = {"config": config, "recipe": specs[name]["recipe"]}
            variant = f"{name}-{c}"
            if variant in personas:
                if same_spec(specs[variant], less):
                    variants.append(variant)
                else:
                    stale.append(variant)
                continue
            # a persona re-registered with a component swapped: its ablation may have run under another label
            # (ada_lovelace less byte_ngram_embedding is the earlier 'ada_lovelace-adaptive_softmax')
            same = [v for v in sorted(personas) if "@" not in v and v != name and base_label(v) == name
                    and same_spec(specs[v], less)]
            variants += same[:1]
        if variants:
            found[name] = variants
    return found, stale


def _tunings(personas: dict) -> dict[str, list[str]]:
    """persona -> its recipe-tuning variants present in the group: rows named 'persona@key=value,...' (as
    `dreamteam bench --set` labels them)."""
    found = {}
    for name in sorted(personas):
        variants = sorted(v for v in personas if v.startswith(name + "@"))
        if variants:
            found[name] = variants
    return found


def summarize_runs(folder: str | Path, warn=None) -> dict:
    """Everything the report shows, as one JSON-ready dict (results.json): groups, rows, seeds, failures."""
    folder = Path(folder)
    records = [(p.relative_to(folder).as_posix(), r) for p, r in read_records(folder, warn)]
    ok = [(rel, r) for rel, r in records if r["status"] == "ok"]
    ok_keys = {(r["persona"], int(r["seed"]), device_type(r["device"]), int(r["max_iters"])) for _, r in ok}

    failures = []
    for rel, r in records:
        if r["status"] == "ok":
            continue
        failures.append({
            "file": rel, "persona": r["persona"], "seed": int(r["seed"]), "device": r["device"],
            "max_iters": int(r["max_iters"]), "status": r["status"], "error": r.get("error", ""),
            "rerun_ok": (r["persona"], int(r["seed"]), device_type(r["device"]), int(r["max_iters"])) in ok_keys,
        })
    failures.sort(key=lambda f: (f["persona"], f["seed"], f["device"], f["max_iters"], f["file"]))

    grouped: dict[tuple[str, int], dict[str, list]] = {}
    for rel, r in ok:
        group = grouped.setdefault((device_type(r["device"]), int(r["max_iters"])), {})
        group.setdefault(r["persona"], []).append((rel, r))

    groups = []
    # full protocol runs first, then smoke runs; within each, by device and length
    for (dev, iters) in sorted(grouped, key=lambda k: (k[1] != protocol.MAX_ITERS, k[0], k[1])):
        personas, superseded, kept_all, specs, kept_files = {}, [], [], {}, set()
        labels = grouped[(dev, iters)]
        # once per persona: a row's spec, also the one its `--set` runs must match to count in it
        current = {name: _current_spec(name, labels) for name in set(labels) | {base_label(n) for n in labels}}
        by_persona = _with_relabelled_runs(labels, current)
        for name in sorted(by_persona):
            kept, old = _latest_per_seed(by_persona[name], current[name])
            superseded += old
            kept_all += [r for _, r in kept]
            kept_files.update(rel for rel, _ in kept)
            specs[name] = {k: kept[-1][1].get(k) or {} for k in ("config", "recipe")}
            personas[name] = {
                "n_seeds": len(kept),
                "seeds": [int(r["seed"]) for _, r in kept],
                "components": list((kept[-1][1].get("config") or {}).get("components") or []),
                "metrics": {m: summarize([r.get(m) for _, r in kept]) for m in METRICS},
                "runs": [_run_entry(rel, r) for rel, r in kept],
            }
        # a component variant ('persona+a-b') that the registry has since made the persona itself: every run it
        # kept counts in the persona's row, which is shown instead of a second identical row
        for name in [n for n in personas if base_label(n) != n and "@" not in n and base_label(n) in personas]:
            if {r["file"] for r in personas[name]["runs"]} <= {r["file"] for r in personas[base_label(name)]["runs"]}:
                del personas[name], specs[name]
        order = _ordered(personas)
        if BASELINE in personas:
            for name in order:
                personas[name]["vs_baseline"] = None if name == BASELINE else versus(personas[name], personas[BASELINE])
        found, stale = _ablations(personas, specs)
        ablations = {p: {v: versus(personas[v], personas[p]) for v in vs} for p, vs in found.items()}
        tunings = {p: {v: versus(personas[v], personas[p]) for v in vs} for p, vs in _tunings(personas).items()}
        versions = [(r.get("versions") or {}) for r in kept_all]
        groups.append({
            "id": f"{_safe(dev)}_{iters}it",
            "device_type": dev,
            "max_iters": iters,
            "full_protocol": iters == protocol.MAX_ITERS,
            "devices": sorted({str(r["device"]) for r in kept_all}),
            "processors": sorted({str(v["processor"]) for v in versions if v.get("processor")}),
            "accelerators": sorted({str(r["accelerator"]) for r in kept_all if r.get("accelerator")}),
            "platforms": sorted({str(v["platform"]) for v in versions if v.get("platform")}),
            "versions": _distinct_versions(versions),
            "commands": sorted({str(r["command"]) for r in kept_all if r.get("command")}),
            "data_dirs": sorted({str(r["data_dir"]) for r in kept_all if r.get("data_dir")}),
            "order": order,
            "personas": personas,
            "ablations": ablations,
            "tunings": tunings,
            "superseded": sorted(set(superseded) - kept_files),  # a relabelled run may be kept in its own row
            "stale_ablations": stale,
        })
    return {"metrics": list(METRICS), "groups": groups, "failures": failures}


def _finite_curve(points) -> list[list]:
    curve = [[int(s), finite(v)] for s, v in (points or [])]
    return [c for c in curve if c[1] is not None]


def _run_entry(rel: str, r: dict) -> dict:
    entry = {"seed": int(r["seed"]), "file": rel, "name": r.get("name"), "device": r["device"],
             **{m: finite(r.get(m)) for m in METRICS}, "val_loss_curve": _finite_curve(r.get("val_loss_curve")),
             "max_load": max_load(r), "cpu_count": r.get("cpu_count"), "threads": r.get("threads")}
    if r.get("train_loss_curve"):  # records written before it existed have none
        entry["train_loss_curve"] = _finite_curve(r["train_loss_curve"])
    if r.get("resumed"):
        entry["resumed"] = True
    return entry


def shared_machine_runs(group: dict) -> list[dict]:
    """The runs of a group whose recorded 1-minute load average exceeded their own share of the machine (their
    torch threads, at most the core count; the core count where threads were not recorded) by more than 0.5:
    something else ran beside them, so their timings are inflated (their losses are not affected). A 1-thread
    run beside another 1-thread run on 2 cores is flagged although the load stays at the core count."""
    def own_load(run: dict) -> int:
        threads = run.get("threads")
        return min(threads, run["cpu_count"]) if isinstance(threads, int) and threads > 0 else run["cpu_count"]
    seen, out = set(), []
    for run in (run for name in group["order"] for run in group["personas"][name]["runs"]):
        if run.get("max_load") is not None and run.get("cpu_count") and run["max_load"] > own_load(run) + 0.5:
            if run["file"] not in seen:  # a `--set` run may also count in its persona's row: listed once
                seen.add(run["file"])
                out.append(run)
    return out


def _distinct_versions(versions: list[dict]) -> list[dict]:
    """The distinct version sets of a group's records (the package, git commit, engines), sorted."""
    keys = ("dreamteam", "git_commit", "torch", "python", "numpy")
    seen = {tuple((k, str(v.get(k))) for k in keys if v.get(k) is not None) for v in versions}
    return [dict(t) for t in sorted(seen)]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# ---------------------------------------------------------------- markdown


def _fmt(x, decimals: int) -> str:
    return "n/a" if x is None else f"{x:.{decimals}f}"


def _cell(stats: dict, decimals: int) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{_fmt(stats['mean'], decimals)} ± {_fmt(stats['std'], decimals)}"


def _vs_cell(v: dict | None) -> str:
    if v is None:
        return "—"
    if v["delta_val_loss"] is None:
        return "n/a"
    verdict = "n/a (needs 2+ seeds each)" if v["below"] is None else ("yes" if v["below"] else "no")
    return f"{v['delta_val_loss']:+.4f} ({verdict})"


def _comparison_table(title: str, explanation: str, personas: dict, persona: str, variants: dict) -> list[str]:
    """A persona's row and its variants' rows (ablations or tunings), with each variant against the persona."""
    metrics = ("val_loss", "val_loss_best", "best_vloss")
    lines = [f"### {title}", "", explanation, "",
             "| variant | seeds | " + " | ".join(f"`{m}`" for m in metrics) + " | vs the whole persona |",
             "|" + " --- |" * (len(metrics) + 3)]
    for name in [persona, *variants]:
        row = personas[name]
        vs = "—" if name == persona else _vs_cell(variants[name])
        cells = [_cell(row["metrics"][m], 4) for m in metrics]
        removed = sorted(set(personas[persona]["components"]) - set(row["components"]))
        # an ablation run under an earlier label (before the persona was re-registered) says what it removes
        alias = (f" (the persona less `{removed[0]}`)" if name != persona and "@" not in name and len(removed) == 1
                 and name != f"{persona}-{removed[0]}" else "")
        lines.append(f"| `{name}`{alias} | {row['n_seeds']} | " + " | ".join(cells) + f" | {vs} |")
    return lines + [""]


def render_markdown(summary: dict, plots: dict[str, tuple[str, str]]) -> str:
    """RESULTS.md: per (device, max_iters) group a table, ablations, plots, versions and commands; failures."""
    lines = [
        "# Results",
        "",
        "Written by `dreamteam report` from the run records of `dreamteam bench`. One table per device and",
        "run length: devices are never mixed, and smoke runs (fewer than the protocol's "
        f"{protocol.MAX_ITERS} iterations) never sit beside full runs.",
        "Each cell is mean ± sample standard deviation (ddof=1) over the seeds; n/a where there is one seed.",
        "\"vs baseline\" is the persona's mean `val_loss` minus the baseline's, and whether it is below the",
        "baseline by more than the two standard deviations combined (docs/personas.md); comparisons quote 3+ seeds.",
        "",
    ]
    if not summary["groups"]:
        lines += ["No successful runs.", ""]
    header = "| persona | seeds | " + " | ".join(f"`{m}`" for m in METRICS) + " | vs baseline |"
    for g in summary["groups"]:
        kind = "full protocol runs" if g["full_protocol"] else "smoke runs, not protocol results"
        lines += [f"## {g['device_type']}, {g['max_iters']} iterations ({kind})", ""]
        device = ", ".join(f"`{d}`" for d in g["devices"])
        processor = ", ".join(f"`{p}`" for p in g["processors"]) or "not recorded"
        accelerators = ", ".join(f"`{a}`" for a in g["accelerators"])
        lines += [f"Device: {device}" + (f"; accelerator: {accelerators}" if accelerators else "") + f"; host processor: {processor}."
                  + (" Timings (`elapsed_min`, `ms_per_iter`) compare only between runs on one processor."
                     if len(g["processors"]) > 1 else ""), ""]
        lines += [header, "|" + " --- |" * (len(METRICS) + 3)]
        for name in g["order"]:
            row = g["personas"][name]
            cells = [f"`{name}`", str(row["n_seeds"])] + [_cell(row["metrics"][m], DECIMALS[m]) for m in METRICS]
            vs = _vs_cell(row.get("vs_baseline")) if BASELINE in g["personas"] else "no baseline"
            lines.append("| " + " | ".join(cells + [vs]) + " |")
        lines.append("")
        seeds = "; ".join(f"`{n}`: {', '.join(map(str, g['personas'][n]['seeds']))}" for n in g["order"])
        lines += [f"Seeds: {seeds}.", ""]
        resumed = [run["file"] for name in g["order"] for run in g["personas"][name]["runs"] if run.get("resumed")]
        if resumed:
            lines += ["Resumed after an interrupt (`train_mps.py --resume`; losses as an uninterrupted run's, timings "
                      "summed over the run's processes and left out of speed sections): "
                      + ", ".join(f"`{f}`" for f in resumed) + ".", ""]
        shared = shared_machine_runs(g)
        if shared:
            lines += ["Timings of runs that shared the machine (1-minute load average above the run's own torch threads "
                      "at some checkpoint; their losses are unaffected, their `elapsed_min` and `ms_per_iter` are inflated): "
                      + ", ".join(f"`{run['file']}` (load up to {run['max_load']:.1f} on {run['cpu_count']} cores"
                                  + (f", {run['threads']} torch thread(s))" if run.get("threads") else ")")
                                  for run in shared) + ".", ""]
        tables = [("Ablations of", "ablations", "Each variant is the persona with one component removed; a positive "
                   "difference means the component helps."),
                  ("Recipe tuning of", "tunings", "Each variant is the persona with the recipe or component settings "
                   "its name gives (`dreamteam bench --set`); a negative difference means the setting is better.")]
        for title, key, explanation in tables:
            for persona, variants in sorted(g.get(key, {}).items()):
                lines += _comparison_table(f"{title} `{persona}`", explanation, g["personas"], persona, variants)
        if g.get("stale_ablations"):
            lines += ["Ablation variants trained against an earlier config or recipe of their persona (not compared; "
                      "rerun them): " + ", ".join(f"`{v}`" for v in g["stale_ablations"]) + ".", ""]
        curves, bars = plots.get(g["id"], (None, None))
        if curves:
            lines += [f"![val_loss curves, {g['id']}]({curves})", "", f"![val_loss per persona, {g['id']}]({bars})", ""]
        lines += ["Versions:", ""]
        lines += ["- " + ", ".join(f"{k} `{v}`" for k, v in versions.items()) for versions in g["versions"]]
        lines += [f"- platform `{p}`" for p in g["platforms"]]
        lines += ["", "Commands:", ""]
        lines += [f"- `{c}`" for c in g["commands"]] or ["- not recorded"]
        lines.append("")
        if g["superseded"]:
            lines += ["Superseded by a later run of the same persona and seed (not counted): "
                      + ", ".join(f"`{s}`" for s in g["superseded"]) + ".", ""]
    lines += speed.render_speed(summary.get("speed"))
    if summary["failures"]:
        lines += ["## Failed runs", "", "Not counted above; `dreamteam bench` reruns them.", "",
                  "| record | persona | seed | device | iterations | error | rerun ok |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for f in summary["failures"]:
            error = (f["error"] or f"status {f['status']}").splitlines()[0].replace("|", "\\|")
            lines.append(f"| `{f['file']}` | `{f['persona']}` | {f['seed']} | `{f['device']}` | {f['max_iters']} | {error} | "
                         f"{'yes' if f['rerun_ok'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def write_plots(summary: dict, out: Path) -> dict[str, tuple[str, str]]:
    """Per group: val_loss curves (mean over seeds, min-max band) and val_loss per persona with std error bars.
    Returns group id -> (curves file, bars file), names relative to `out`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = {}
    for g in summary["groups"]:
        curves_name, bars_name = f"val_loss_curves_{g['id']}.png", f"val_loss_{g['id']}.png"
        title = f"{g['device_type']}, {g['max_iters']} iterations"

        fig, ax = plt.subplots(figsize=(7, 4.5))
        dashed = False
        for name in g["order"]:
            steps, mean, lo, hi = _curve_stats(g["personas"][name]["runs"])
            if not steps:
                continue
            n = g["personas"][name]["n_seeds"]
            (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=f"{name} (n={n})")
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            train_steps, train_mean, _, _ = _curve_stats(g["personas"][name]["runs"], "train_loss_curve")
            if train_steps:  # the training loss, mean of each 100 steps, beside it in the same colour
                ax.plot(train_steps, train_mean, linestyle="--", linewidth=1, color=line.get_color())
                dashed = True
        ax.set_xlabel("iteration")
        ax.set_ylabel("val_loss (whole validation set)" + ("; dashed: training loss" if dashed else ""))
        ax.set_title(f"val_loss, mean over seeds (band: min-max); {title}")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / curves_name, dpi=100, metadata={"Software": None})
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(g["order"]) + 2), 4.5))
        xs = list(range(len(g["order"])))
        means = [g["personas"][n]["metrics"]["val_loss"]["mean"] for n in g["order"]]
        stds = [g["personas"][n]["metrics"]["val_loss"]["std"] or 0.0 for n in g["order"]]
        ax.errorbar(xs, [m if m is not None else float("nan") for m in means], yerr=stds, fmt="o", capsize=5)
        base = g["personas"].get(BASELINE, {}).get("metrics", {}).get("val_loss", {}).get("mean")
        if base is not None:
            ax.axhline(base, linestyle="--", color="gray", linewidth=1, label="baseline mean")
            ax.legend(fontsize=8)
        ax.set_xticks(xs, [f"{n}\n(n={g['personas'][n]['n_seeds']})" for n in g["order"]], fontsize=8)
        ax.set_ylabel("val_loss (mean ± std over seeds)")
        ax.set_title(f"val_loss per persona; {title}")
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out / bars_name, dpi=100, metadata={"Software": None})
        plt.close(fig)
        written[g["id"]] = (curves_name, bars_name)
    return written


def _curve_stats(runs: list[dict], key: str = "val_loss_curve"):
    """Steps and the mean, min and max of a curve (val_loss; the training loss) over the runs that measured each step."""
    at: dict[int, list[float]] = {}
    for run in runs:
        for step, value in run.get(key) or []:
            if math.isfinite(value):
                at.setdefault(step, []).append(value)
    steps = sorted(at)
    return (steps, [math.fsum(at[s]) / len(at[s]) for s in steps], [min(at[s]) for s in steps],
            [max(at[s]) for s in steps])


# ---------------------------------------------------------------- entry points


def write_report(runs_dir: str | Path, out: str | Path | None = None, warn=None, speed_files=()) -> dict:
    """Write RESULTS.md, results.json and the plots into `out` (default: beside the runs, in runs_dir); returns
    the summary (results.json's content).
    speed_files: bench_step JSON files and run records for the speed section (dreamteam/tools/speed.py)."""
    speed_entries = speed.read_speed(speed_files)  # bad files fail before anything is written
    summary = summarize_runs(runs_dir, warn)
    summary["speed"] = speed_entries
    if not summary["groups"] and not summary["failures"]:
        raise BenchError(f"no run records (*.json written by train_mps.train) under {str(runs_dir)!r}")
    out = Path(runs_dir if out is None else out)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(summary, out)
    (out / "RESULTS.md").write_text(render_markdown(summary, plots))
    (out / "results.json").write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return summary


def main(args) -> int:
    """`dreamteam report`: 0 when written, 2 on bad input (a missing folder, no records)."""
    warn = lambda line: print(line, file=sys.stderr)  # noqa: E731
    try:
        summary = write_report(args.runs, args.out, warn, getattr(args, "speed", None) or ())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.runs if args.out is None else args.out)
    n_runs = sum(r["n_seeds"] for g in summary["groups"] for r in g["personas"].values())
    print(f"wrote {out / 'RESULTS.md'} and {out / 'results.json'}: {len(summary['groups'])} group(s), "
          f"{n_runs} run(s), {len(summary['failures'])} failed run(s) listed")
    return 0
