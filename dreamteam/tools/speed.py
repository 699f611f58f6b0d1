"""The speed section of the results report: measured step and run times against the eager reference.

    dreamteam report results/cpu --out docs --speed docs/measurements/bench_step_cpu.json runs/full/*.json

Two kinds of file are read:
- a `benchmarks/bench_step.py --json` file: ms per training step of each variant (median and minimum over the
  interleaved steps), and the eager reference's median over each variant's, the ratio the speed targets name;
- a run record of `train_mps.train` (a full or smoke run, `--eager` or the fast path): its `ms_per_iter` and
  `elapsed_min`; an eager run and a fast run of the same persona, seed, device, processor and length are
  paired and their ratio given. A resumed run (`train_mps.py --resume`) is skipped and named: its time spans
  two processes, each with its own start-up.
The figures are only ever compared within one file or one (device, processor) pair: never across machines.
"""

from __future__ import annotations

import json
from pathlib import Path

from dreamteam.tools.bench import BenchError
from dreamteam.runs import finite, max_load

REFERENCE = "eager"


def _step_entry(path: str, d: dict) -> dict:
    ms = d["ms_per_step"]
    if not isinstance(ms, dict) or REFERENCE not in ms:
        raise BenchError(f"{path}: a bench_step file needs ms_per_step[{REFERENCE!r}], the reference; found {sorted(ms)}")
    ref = finite(ms[REFERENCE].get("median_ms"))
    variants = []
    for name in sorted(ms, key=lambda n: n != REFERENCE):  # the reference first, then in the file's order
        median = finite(ms[name].get("median_ms"))
        if median is None or median <= 0:
            raise BenchError(f"{path}: ms_per_step[{name!r}] has no positive median_ms")
        variants.append({"name": name, "median_ms": median, "min_ms": finite(ms[name].get("min_ms")),
                         "ratio": ref / median if ref else None,
                         "warmup_s": finite((d.get("warmup_s") or {}).get(name))})
    loads = [(d.get(k) or [None])[0] for k in ("load_average_before", "load_average_after")]
    return {"file": path, "kind": "step", "device": d.get("device"), "processor": d.get("processor") or None,
            "threads": d.get("threads"), "cpu_count": d.get("cpu_count"), "torch": d.get("torch"),
            "chunk": d.get("chunk"), "steps": d.get("steps"), "load_average": loads, "command": d.get("command"),
            "variants": variants}


def _run_entry(path: str, r: dict) -> dict:
    if r.get("status") != "ok":
        raise BenchError(f"{path}: run record with status {r.get('status')!r}; only finished runs have timings")
    return {"file": path, "kind": "run", "persona": r.get("persona"), "seed": r.get("seed"), "device": r.get("device"),
            "processor": (r.get("versions") or {}).get("processor"), "accelerator": r.get("accelerator"),
            "torch": (r.get("versions") or {}).get("torch"), "max_iters": r.get("max_iters"),
            "fast": bool(r.get("fast", True)), "threads": r.get("threads"), "cpu_count": r.get("cpu_count"),
            "max_load": max_load(r), "elapsed_min": finite(r.get("elapsed_min")),
            "ms_per_iter": finite(r.get("ms_per_iter")), "best_vloss": finite(r.get("best_vloss")),
            "val_loss": finite(r.get("val_loss")), "command": r.get("command")}


def read_speed(paths) -> dict:
    """{"steps": [...], "runs": [...]} from bench_step JSON files and run records; BenchError on anything else."""
    steps, run_entries, skipped = [], [], []
    for p in paths:
        path = str(p)
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise BenchError(f"speed file {path!r} not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BenchError(f"speed file {path!r} is not readable JSON: {e}") from None
        if isinstance(d, dict) and "ms_per_step" in d:
            steps.append(_step_entry(path, d))
        elif isinstance(d, dict) and "persona" in d and "status" in d and d.get("resumed"):
            skipped.append(path)
        elif isinstance(d, dict) and "persona" in d and "status" in d:
            run_entries.append(_run_entry(path, d))
        else:
            raise BenchError(f"speed file {path!r} is neither a benchmarks/bench_step.py --json file nor a run record")
    key = lambda e: (str(e["device"]), str(e["processor"]), str(e["persona"]), int(e["seed"] or 0),  # noqa: E731
                     int(e["max_iters"] or 0), e["fast"], e["file"])
    run_entries.sort(key=key)
    # the eager reference of the same run on the same machine, where there is one (the last file of several)
    eager_ms = {key(o)[:5]: o["ms_per_iter"] for o in run_entries if not o["fast"]}
    for e in run_entries:
        ref = eager_ms.get(key(e)[:5])
        e["ratio"] = ref / e["ms_per_iter"] if ref and e["ms_per_iter"] else None
    out = {"steps": steps, "runs": run_entries}
    if skipped:  # only where there are some: results.json stays as it was for the others
        out["skipped_resumed"] = skipped
    return out


def _f(x, fmt):
    return "n/a" if x is None else format(x, fmt)


def _ratio(x):
    return "n/a" if x is None else f"{x:.2f}x"


def render_speed(speed: dict) -> list[str]:
    """The markdown lines of the speed section (none where no file was given)."""
    if not speed or not (speed["steps"] or speed["runs"] or speed.get("skipped_resumed")):
        return []
    lines = ["## Speed against the eager reference", "",
             "Read from the files given to `dreamteam report --speed`. The eager reference is the plain "
             "`model(x, y)` loss with the original code's AdamW; the ratio is its time over the variant's, measured "
             "on the same machine in the same file (steps) or the same setting (runs). Timings compare only within "
             "one machine.", ""]
    for s in speed["steps"]:
        machine = f"`{s['device']}`, processor `{s['processor'] or 'not recorded'}`"
        lines += [f"### Training step: `{s['file']}`", "",
                  f"{machine}, {s['threads']} torch thread(s) on {s['cpu_count']} cores, torch `{s['torch']}`, "
                  f"chunk {s['chunk']}, median of {s['steps']} interleaved steps, 1-minute load average "
                  f"{_f(s['load_average'][0], '.2f')} -> {_f(s['load_average'][1], '.2f')}. Command: "
                  + (f"`{s['command']}`." if s.get("command") else "not recorded in the file."), "",
                  "| variant | median ms/step | min ms/step | eager / variant | warmup s |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| `{v['name']}` | {v['median_ms']:.1f} | {_f(v['min_ms'], '.1f')} | {_ratio(v['ratio'])} | "
                  f"{_f(v['warmup_s'], '.1f')} |" for v in s["variants"]]
        lines.append("")
    if speed["runs"]:
        lines += ["### Whole runs", "",
                  "`ms_per_iter` and `elapsed_min` of whole `train_mps.train` runs (evaluations at the protocol's "
                  "100-step interval included, the harness's checkpoint evaluations not); the ratio pairs a fast run "
                  "with the eager run of the same persona, seed, device, processor and length.", "",
                  "| record | device | processor | threads (max load) | path | iterations | `elapsed_min` | `ms_per_iter` "
                  "| eager / fast | `best_vloss` | `val_loss` |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in speed["runs"]:
            device = f"`{r['device']}`" + (f" (`{r['accelerator']}`)" if r.get("accelerator") else "")
            lines.append(f"| `{r['file']}` | {device} | `{r['processor']}` | {r['threads']} ({_f(r['max_load'], '.1f')}) | "
                         f"{'fast' if r['fast'] else 'eager'} | {r['max_iters']} | {_f(r['elapsed_min'], '.2f')} | "
                         f"{_f(r['ms_per_iter'], '.1f')} | {_ratio(r['ratio']) if r['fast'] else ''} | "
                         f"{_f(r['best_vloss'], '.4f')} | {_f(r['val_loss'], '.4f')} |")
        lines += [""] + [f"- `{r['file']}`: `{r['command']}`" for r in speed["runs"] if r.get("command")] + [""]
    if speed.get("skipped_resumed"):
        lines += ["Left out: resumed runs (`train_mps.py --resume`), whose time spans several processes: "
                  + ", ".join(f"`{f}`" for f in speed["skipped_resumed"]) + ".", ""]
    return lines
