"""`dreamteam evolve`: DreamTeam's evolutionary loop, measured, checked, persisted and resumable.

    dreamteam evolve --generations G --population P --out DIR [--seeds S ...] [--llm-command CMD --persona-prompts DIR]
                     [--executor local|ray] [--workers N]

Candidates are of two kinds:

- registry genomes (always): a set of components (names of dreamteam.config.KNOWN_COMPONENTS, read when the
  run starts) and recipe settings, run through the project's train_mps.train with a Persona built from them.
  Generation 0 is the measured baseline, the registered personas, and mutants of the baseline; later
  generations keep the fittest candidate so far (the elite, carried over with its measurements) and fill
  the population with children: uniform crossover of the two fittest valid genomes, then mutation (switch
  one component on or off, or perturb one recipe setting);
- persona proposals (where --llm-command and --persona-prompts are given): each persona prompt in the folder
  asks for a modified train_mps.py/model.py of the fittest code candidate so far (the project's files at
  first), through dreamteam.propose; a rejected answer is recorded, and its slot goes to a genome.

Every candidate is evaluated by dreamteam.harness.evaluate with the same seeds (the baseline included), so
fitness = mean over seeds of best_vloss + 0.01 * elapsed_min is measured, never typed in; failed candidates
rank last, then invalid ones (protocol violations), then by fitness.

Everything is persisted: DIR/gen_NNN/population.json (written before any evaluation), one folder per
candidate (genome.json or the code, metrics.json with the check report, per-seed metrics_sS.json),
DIR/gen_NNN/summary.json when the generation is done, and DIR/generations.md, the generation table. A run
that is interrupted resumes where it stopped: populations are read back, evaluated candidates are not run
again. Random choices come from numpy generators seeded by (--rng-seed, generation).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dreamteam import executors, harness, runs

# recipe settings a mutation perturbs, and how
LR_RANGE = (1e-5, 3e-2)
CHOICES = {
    "schedule": ["constant", "cosine"],
    "warmup_iters": [0, 100, 200, 500],
    "weight_decay": [0.0, 0.01, 0.1],
    "beta2": [0.95, 0.99],
    "grad_clip": [0.0, 1.0],
    "min_lr_fraction": [0.01, 0.1, 1.0],  # min_lr as a fraction of learning_rate
}
RECIPE_KEYS = ("learning_rate", "schedule", "warmup_iters", "min_lr", "weight_decay", "beta2", "grad_clip")


class EvolveError(ValueError):
    pass


def known_components() -> tuple[str, ...]:
    from dreamteam import config

    return tuple(config.KNOWN_COMPONENTS)


def genome_of(persona) -> dict:
    r = asdict(persona.recipe)
    return {"name": persona.name, "components": list(persona.model.components), "recipe": {k: r[k] for k in RECIPE_KEYS}}


def validate(genome: dict, model_options: dict) -> None:
    """Raise ConfigError where the genome builds no model or recipe."""
    from dreamteam.config import GPTConfig, Recipe

    GPTConfig(components=tuple(genome["components"]), **model_options)
    Recipe(**genome["recipe"])


def mutate(genome: dict, rng: np.random.Generator, components: tuple[str, ...]) -> tuple[dict, str]:
    """One change: switch a component on or off, or perturb one recipe setting. Returns (child, description)."""
    g = {"components": list(genome["components"]), "recipe": dict(genome["recipe"])}
    r = g["recipe"]
    if components and rng.random() < 0.5:
        c = components[rng.integers(len(components))]
        if c in g["components"]:
            g["components"].remove(c)
            return g, f"-{c}"
        g["components"].append(c)
        return g, f"+{c}"
    key = ["learning_rate", "schedule", "warmup_iters", "min_lr", "weight_decay", "beta2", "grad_clip"][rng.integers(7)]
    if key == "learning_rate":
        new = float(np.clip(r["learning_rate"] * math.exp(rng.normal(0.0, 0.7)), *LR_RANGE))
        if r["schedule"] == "constant":
            r["min_lr"] = new
        r["learning_rate"] = new
    elif key == "min_lr":
        r["min_lr"] = r["learning_rate"] * float(rng.choice(CHOICES["min_lr_fraction"]))
        if r["schedule"] == "constant":
            r["schedule"] = "cosine"
    else:
        options = [x for x in CHOICES[key] if x != r[key]]
        r[key] = options[rng.integers(len(options))]
        if key == "schedule" and r[key] == "cosine" and r["min_lr"] >= r["learning_rate"]:
            r["min_lr"] = r["learning_rate"] * 0.1
    return g, f"{key}={r[key]:.3g}" if isinstance(r[key], float) else f"{key}={r[key]}"


def crossover(a: dict, b: dict, rng: np.random.Generator) -> dict:
    """Uniform crossover: each component present in either parent is taken from a parent drawn at random,
    each recipe setting from a parent drawn at random."""
    comps = [c for c in dict.fromkeys(a["components"] + b["components"])
             if c in (a if rng.random() < 0.5 else b)["components"]]
    recipe = {k: (a if rng.random() < 0.5 else b)["recipe"][k] for k in RECIPE_KEYS}
    return {"components": comps, "recipe": recipe}


def label(genome: dict) -> str:
    """The components switched on, then the recipe settings that differ from the baseline's."""
    from dreamteam.config import Recipe

    base = asdict(Recipe())
    diff = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in genome["recipe"].items() if base.get(k) != v]
    return " ".join(["+".join(genome["components"]) or "baseline-arch"] + diff)


def _offspring(parents: list[dict], rng, components, model_options, seen: set) -> tuple[dict, str]:
    for _ in range(50):
        if len(parents) >= 2 and rng.random() < 0.5:
            child, how = crossover(parents[0], parents[1], rng), "crossover of the two fittest"
            child, m = mutate(child, rng, components)
            how += f", then {m}"
        else:
            p = parents[0] if len(parents) == 1 or rng.random() < 0.6 else parents[1]
            child, m = mutate(p, rng, components)
            how = f"mutation {m} of {p.get('name', 'parent')}"
        key = json.dumps(child, sort_keys=True)
        if key in seen:
            continue
        try:
            validate(child, model_options)
        except ValueError:
            continue
        seen.add(key)
        return child, how
    raise EvolveError("no new valid genome in 50 tries: the search space is exhausted")


def _candidates(out: Path) -> list[tuple[str, dict, dict]]:
    """(gen/cand, population entry, metrics) for every evaluated candidate so far."""
    found = []
    for pop_file in sorted(out.glob("gen_*/population.json")):
        for entry in json.loads(pop_file.read_text()):
            d = pop_file.parent / entry["id"]
            if (d / "metrics.json").exists():
                found.append((f"{pop_file.parent.name}/{entry['id']}", entry, json.loads((d / "metrics.json").read_text())))
    return found


def _persona_prompts(folder) -> list[Path]:
    if folder is None:
        return []
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".md", ".txt") and p.is_file())
    if not files:
        raise EvolveError(f"no persona prompts (*.md, *.txt) in {folder}")
    return files


def make_population(out: Path, gen: int, P: int, cfg: dict) -> list[dict]:
    """Create generation gen's candidate folders and population.json (once; a resumed run reads it back)."""
    from dreamteam import propose, registry

    gdir = out / f"gen_{gen:03d}"
    pop_file = gdir / "population.json"
    if pop_file.exists():
        return json.loads(pop_file.read_text())
    gdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg["rng_seed"], gen])
    components = tuple(cfg["components"])
    model_options = cfg["model_options"]
    entries: list[dict] = []

    def add_genome(genome, origin):
        cid = f"cand_{len(entries):02d}"
        d = gdir / cid
        d.mkdir(exist_ok=True)
        genome = {"name": genome.get("name") or f"g{gen}-{cid}", "components": genome["components"],
                  "recipe": genome["recipe"], "model": model_options}
        runs.write_json_atomic(d / "genome.json", genome)
        entries.append({"id": cid, "kind": "genome", "origin": origin, "label": label(genome)})

    history = _candidates(out)
    ranked = sorted(history, key=lambda t: harness.rank_key(t[2]))
    seen = {json.dumps({"components": json.loads((out / k / "genome.json").read_text())["components"],
                        "recipe": json.loads((out / k / "genome.json").read_text())["recipe"]}, sort_keys=True)
            for k, e, _ in history if e["kind"] == "genome"}

    if gen == 0:
        base = genome_of(registry.BASELINE)
        add_genome(base, "the registry baseline (measured, same seeds)")
        seen.add(json.dumps({"components": base["components"], "recipe": base["recipe"]}, sort_keys=True))
        parents = [base]
    else:
        best_key, best_entry, _ = ranked[0]
        cid = f"cand_{len(entries):02d}"
        shutil.copytree(out / best_key, gdir / cid, ignore=shutil.ignore_patterns(".harness", "runs"), dirs_exist_ok=True)
        entries.append({"id": cid, "kind": best_entry["kind"], "origin": f"elite: {best_key} carried over with its measurements",
                        "label": best_entry["label"], "carried": best_key})
        parents = [json.loads((out / k / "genome.json").read_text()) for k, e, m in ranked
                   if e["kind"] == "genome" and m.get("status") == "ok" and m.get("valid")][:2]
        if not parents:
            parents = [genome_of(registry.BASELINE)]

    # persona proposals from the fittest code candidate so far (the project's own files at first)
    code_from = next((out / k for k, e, m in ranked if e["kind"] == "code" and m.get("status") == "ok" and m.get("valid")), None)
    for prompt in cfg["persona_prompts"]:
        if len(entries) >= P:
            break
        cid = f"cand_{len(entries):02d}"
        d = gdir / cid
        rec = propose.propose(prompt, code_from or harness.PROJECT_ROOT, d, cfg["llm_command"])
        if rec["status"] == "accepted":
            entries.append({"id": cid, "kind": "code", "origin": f"proposal of {Path(prompt).stem} from {code_from or 'the project'}",
                            "label": Path(prompt).stem})
        else:  # the rejected answer stays on disk for reading; the slot goes to a genome
            shutil.rmtree(gdir / f"rejected_{Path(prompt).stem}", ignore_errors=True)
            d.rename(gdir / f"rejected_{Path(prompt).stem}")

    if gen == 0:  # the registered personas, as genomes
        for name, persona in sorted(registry.PERSONAS.items()):
            if name == "baseline" or len(entries) >= P:
                continue
            g = genome_of(persona)
            try:
                validate(g, model_options)
            except ValueError:
                continue
            add_genome(g, f"the registered persona {name}")
            seen.add(json.dumps({"components": g["components"], "recipe": g["recipe"]}, sort_keys=True))
    while len(entries) < P:
        child, how = _offspring(parents, rng, components, model_options, seen)
        add_genome(child, how)
    runs.write_json_atomic(pop_file, entries)
    return entries


def _evaluate_all(gdir: Path, entries: list[dict], cfg: dict) -> None:
    todo = [e for e in entries if not (gdir / e["id"] / "metrics.json").exists()]
    if not todo:
        return
    kwargs = {"seeds": cfg["seeds"], "timeout_min": cfg["timeout_min"], "device": cfg["device"], "data_dir": cfg["data_dir"],
              "max_iters": cfg["max_iters"], "val_windows": cfg["val_windows"], "threads": cfg["threads"]}
    if cfg["executor"] == "local" and kwargs["threads"] is None and cfg["workers"] > 1 and "OMP_NUM_THREADS" not in os.environ:
        # concurrent evaluations share the cores instead of fighting over them
        kwargs["threads"] = max(1, (os.cpu_count() or 1) // cfg["workers"])
    # threads, not processes, for a local pool: each evaluation is a process of its own already
    executors.run(evaluate_seeds, [dict(kwargs, cand_dir=str(gdir / e["id"])) for e in todo], executor=cfg["executor"],
                  workers=cfg["workers"] if cfg["executor"] == "local" else cfg.get("ray_cpus"),
                  ray_address=cfg.get("ray_address"), processes=False)


def evaluate_seeds(cand_dir: str, seeds, **kwargs) -> dict:
    """Evaluate at every seed (metrics_sS.json) and aggregate into metrics.json: means over seeds; failed or
    invalid if any seed is."""
    per = []
    for s in seeds:
        name = f"metrics_s{s}.json"
        p = Path(cand_dir) / name
        per.append(json.loads(p.read_text()) if p.exists() else harness.evaluate(cand_dir, seed=s, metrics_name=name, **kwargs))
    ok = all(m["status"] == "ok" for m in per)

    def mean(key):
        vals = [m[key] for m in per]
        return float(np.mean(vals)) if ok and all(v is not None for v in vals) else None

    first_bad = next((m for m in per if m["status"] != "ok"), None)
    agg = {
        "dir": cand_dir, "seeds": list(seeds), "status": "ok" if ok else "failed",
        "reason": None if ok else f"seed {first_bad['seed']}: {first_bad['reason']}",
        "valid": ok and all(m["valid"] for m in per),
        "best_vloss": mean("best_vloss"), "elapsed_min": mean("elapsed_min"),
        "fitness": mean("fitness") if ok else math.inf, "val_loss": mean("val_loss"),
        "fitness_std": float(np.std([m["fitness"] for m in per])) if ok and len(per) > 1 else None,
        "n_params": per[0].get("n_params"), "max_iters": per[0]["max_iters"], "protocol_run": per[0]["protocol_run"],
        "check": {"valid": all(m["check"]["valid"] for m in per),
                  "static": per[0]["check"]["static"],
                  "dynamic": [dict(v, seed=m["seed"]) for m in per for v in m["check"]["dynamic"]],
                  "substitutions": per[0]["check"]["substitutions"]},
        "per_seed": [f"metrics_s{s}.json" for s in seeds],
    }
    runs.write_json_atomic(Path(cand_dir) / "metrics.json", agg)
    return agg


def _fmt(x, nd=4):
    return "-" if x is None else ("inf" if x == math.inf else f"{x:.{nd}f}")


def write_table(out: Path) -> Path:
    """generations.md: every candidate of every generation, ranked within its generation."""
    lines = ["# Generations", "", "fitness = mean over seeds of best_vloss + 0.01 * elapsed_min; failed last, then invalid.", ""]
    for pop_file in sorted(out.glob("gen_*/population.json")):
        gdir = pop_file.parent
        rows = []
        for e in json.loads(pop_file.read_text()):
            p = gdir / e["id"] / "metrics.json"
            rows.append((e, json.loads(p.read_text()) if p.exists() else None))
        rows.sort(key=lambda r: harness.rank_key(r[1]) if r[1] else (True, True, math.inf))
        lines += [f"## {gdir.name}", "", "| rank | candidate | kind | label | origin | status | valid | best_vloss | elapsed_min | fitness | val_loss | n_params |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for i, (e, m) in enumerate(rows, 1):
            if m is None:
                lines.append(f"| {i} | {e['id']} | {e['kind']} | {e['label']} | {e['origin']} | not evaluated | | | | | | |")
                continue
            status = m["status"] if m["status"] == "ok" else f"failed: {m['reason']}"
            lines.append(f"| {i} | {e['id']} | {e['kind']} | {e['label']} | {e['origin']} | {status} | {'yes' if m['valid'] else 'NO'} | "
                         f"{_fmt(m['best_vloss'])} | {_fmt(m['elapsed_min'], 3)} | {_fmt(m['fitness'])} | {_fmt(m['val_loss'])} | {m.get('n_params') or '-'} |")
        lines.append("")
    path = out / "generations.md"
    path.write_text("\n".join(lines))
    return path


def default_workers() -> int:
    """Half the cores (at least 1): each evaluation gets cores of its own, since elapsed_min is part of fitness."""
    return max(1, (os.cpu_count() or 1) // 2)


def evolve(out, generations: int, population: int, *, seeds=(0,), executor="local", workers=None, llm_command=None,
           persona_prompts=None, device="cpu", data_dir=None, timeout_min=120.0, max_iters=None, val_windows=None,
           model_options=None, rng_seed=0, threads=None, ray_address=None, environ=None, log=print) -> Path:
    from dreamteam import data

    if generations < 1 or population < 2:
        raise EvolveError(f"need generations >= 1 and population >= 2; got {generations}, {population}")
    if executor not in executors.EXECUTORS:
        raise EvolveError(f"unknown executor {executor!r}; expected one of {', '.join(executors.EXECUTORS)}")
    if persona_prompts and not llm_command:
        raise EvolveError("--persona-prompts needs --llm-command (the program that answers them)")
    ray_cpus, workers = workers, workers or default_workers()  # Ray's local instance: all CPUs unless --workers
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"seeds": list(seeds), "device": device, "data_dir": str(data.find_data_dir(data_dir, environ)),
           "max_iters": max_iters, "val_windows": val_windows, "model_options": dict(model_options or {}),
           "rng_seed": rng_seed, "population": population, "components": list(known_components())}
    state_file = out / "evolve.json"
    if state_file.exists():  # a resumed run must be the same experiment
        old = json.loads(state_file.read_text())["config"]
        diff = {k: (old.get(k), v) for k, v in cfg.items() if old.get(k) != v}
        if diff:
            raise EvolveError(f"{out} holds a run with other settings {diff}; use another --out")
        log(f"resuming the run in {out}")
    runs.write_json_atomic(state_file, {"config": cfg, "generations": generations})
    cfg.update(executor=executor, workers=workers, llm_command=llm_command, timeout_min=timeout_min, threads=threads,
               persona_prompts=[str(p) for p in _persona_prompts(persona_prompts)] if llm_command else [],
               ray_address=ray_address, ray_cpus=ray_cpus)
    for gen in range(generations):
        gdir = out / f"gen_{gen:03d}"
        if (gdir / "summary.json").exists():
            continue
        entries = make_population(out, gen, population, cfg)
        log(f"generation {gen}: {len(entries)} candidates")
        _evaluate_all(gdir, entries, cfg)
        ms = {e["id"]: json.loads((gdir / e["id"] / "metrics.json").read_text()) for e in entries}
        best = min(ms, key=lambda k: harness.rank_key(ms[k]))
        runs.write_json_atomic(gdir / "summary.json", {"generation": gen, "best": best, "best_fitness": ms[best]["fitness"],
                                                        "fitness": {k: m["fitness"] for k, m in ms.items()}})
        write_table(out)
        log(f"generation {gen}: best {best} fitness {_fmt(ms[best]['fitness'])} ({'valid' if ms[best]['valid'] else 'INVALID'})")
    return write_table(out)


def add_arguments(p) -> None:
    from dreamteam import arguments

    p.add_argument("--generations", type=arguments.positive_int, required=True, help="generations to run")
    p.add_argument("--population", type=arguments.positive_int, required=True, help="candidates per generation (at least 2)")
    p.add_argument("--out", required=True, help="the run's folder; an interrupted run resumes from it")
    p.add_argument("--seeds", type=arguments.seed, nargs="+", default=[0], help="every candidate, the baseline included, runs at each")
    p.add_argument("--llm-command", default=None, metavar="CMD",
                   help="a command that reads a persona prompt on stdin and answers on stdout (default: registry genomes only)")
    p.add_argument("--persona-prompts", default=None, metavar="DIR",
                   help="one persona prompt per file (*.md, *.txt); needs --llm-command (default: none)")
    executors.add_arguments(p, "candidate evaluations", workers_default="half the cores; with more than one, each gets "
                            "cores // workers torch threads unless OMP_NUM_THREADS is set")
    p.add_argument("--device", type=arguments.device, default="cpu", help="the device every candidate trains on")
    p.add_argument("--data-dir", default=None, help="folder of train.bin/val.bin (default: $DREAMTEAM_DATA, else "
                   "./data/shakespeare, else the shipped tiny Shakespeare prepared into ~/.cache/dreamteam/shakespeare)")
    p.add_argument("--timeout", type=arguments.positive_float, default=120.0, metavar="MIN", help="minutes per evaluation")
    p.add_argument("--rng-seed", type=arguments.seed, default=0, help="seed of the mutation and crossover choices")
    p.add_argument("--max-iters", type=arguments.positive_int, default=None,
                   help="tests and smoke runs only (default: the protocol's 10001)")
    p.add_argument("--val-windows", type=arguments.positive_int, default=None,
                   help="tests and smoke runs only: val_loss on the first N windows (default: all 563)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a GPTConfig field for every genome (tests and smoke runs: e.g. vocab_size=256 with a small-vocabulary "
                        "data set; default: none)")


def main(args) -> int:
    try:
        options = {}
        for kv in args.model_option:
            k, _, v = kv.partition("=")
            options[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
        path = evolve(args.out, args.generations, args.population, seeds=args.seeds, executor=args.executor,
                      workers=args.workers, llm_command=args.llm_command, persona_prompts=args.persona_prompts,
                      device=args.device, data_dir=args.data_dir, timeout_min=args.timeout, max_iters=args.max_iters,
                      val_windows=args.val_windows, model_options=options, rng_seed=args.rng_seed, ray_address=args.ray_address,
                      environ=os.environ)
    except (EvolveError, executors.ExecutorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"generation table: {path}")
    return 0
