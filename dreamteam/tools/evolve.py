"""`dreamteam evolve`: DreamTeam's evolutionary loop, measured, checked, persisted and resumable.

    dreamteam evolve --generations G --population P --out DIR [--seeds S ...] [--rank-by val_loss|fitness]
                     [--no-baseline] [--parents K] [--confirm K [--confirm-seeds S ...]]
                     [--llm-command CMD --persona-prompts DIR] [--executor local|ray] [--workers N]
    dreamteam evolve --out DIR --table-only [--plot PNG] [--doc MD]

Candidates are of two kinds:

- registry genomes (always): {components, recipe, model}: a compatible set of components (names of
  dreamteam.config.KNOWN_COMPONENTS, read when the run starts), the whole training recipe (Recipe's fields)
  and the genome's model options (GPTConfig fields such as posterior_mean_decay, those that differ from
  the defaults), run through the project's train_mps.train with the Persona built from them. A registered
  persona's genome (genome_of) trains exactly the persona. Generation 0 is the measured baseline (unless
  --no-baseline), the registered personas, then uniform crosses of two personas; later generations keep the
  best candidate so far (the elite, carried over with its measurements) and fill the population with
  children of the K best valid genomes so far (--parents, drawn with weights K, K-1, ..., 1): uniform
  crossover of two of them (an option whose name starts with a component's name goes with that component),
  then a mutation half the time, or a mutation alone (switch one component on or off, or move one setting:
  the learning rate and Muon's rate by a log-normal factor, the rest from short lists);
- persona proposals (where --llm-command and --persona-prompts are given): each persona prompt in the folder
  asks for a modified train_mps.py/model.py of the best code candidate so far (the project's files at
  first), through dreamteam.tools.propose; a rejected answer is recorded, and its slot goes to a genome.

Every candidate is evaluated by dreamteam.tools.harness.evaluate with the same seeds, except where
--reuse-records names folders of `dreamteam bench` run records: a registry genome that a record trained exactly,
at that seed, is read from the record (reused_measurement; the metrics say which file, commit and processor).
Candidates are ranked by --rank-by: val_loss (default; the mean over seeds of the whole-validation loss of
the trained model) or DreamTeam's fitness (mean over seeds of best_vloss + 0.01 * elapsed_min), the other
figure beside it; failed candidates rank last, then invalid ones (protocol violations). The ranking picks
the elite and the parents and orders the generation table. --confirm K evaluates the K best distinct genomes again at
--confirm-seeds (the seeds already measured are not rerun) and ranks them by their means.

Everything is persisted: DIR/evolve.json (the settings, and the record: command lines, commit, processor),
DIR/gen_NNN/population.json (written before any evaluation), one folder per candidate (genome.json or the
code, metrics.json with the check report, per-seed metrics_sS.json, and run_sS.json, train()'s run record
with its val_loss curve), DIR/gen_NNN/summary.json when the generation is done, DIR/confirm/, and
DIR/generations.md, the generation table. A run that is interrupted resumes where it stopped: populations
are read back, evaluated candidates are not run again. Random choices come from numpy generators seeded by
(--rng-seed, generation).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dreamteam import runs
from dreamteam.tools import executors, harness

RANK_BY = ("val_loss", "fitness")
# recipe settings a mutation moves, and how
LR_RANGE = (1e-5, 3e-2)  # AdamW's peak rate, moved by a factor exp(N(0, LR_SIGMA))
MUON_LR_RANGE = (1e-3, 0.1)  # Muon's rate, likewise
LR_SIGMA = 0.5
CHOICES = {
    "schedule": ["constant", "cosine"],
    "warmup_iters": [0, 100, 200, 500],
    "weight_decay": [0.0, 0.01, 0.03, 0.1],
    "min_lr_fraction": [0.01, 0.1, 0.3],  # min_lr as a fraction of learning_rate
    "posterior_mean_decay": [0.99, 0.995, 0.999, 0.9995],  # a model option, meaningful with posterior_mean only
}
# the recipe settings of the first genomes (genome.json files written before genomes held the whole recipe)
RECIPE_KEYS = ("learning_rate", "schedule", "warmup_iters", "min_lr", "weight_decay", "beta2", "grad_clip")
# components that change how the model computes, not what: tiled_attention is exact attention by key blocks
# (FlashAttention's algorithm), so a genome that differs from another only by it is the same experiment
# (alan_turing with and without it, 20 iterations on the real data, seed 0: loss on 4 validation windows 6.3553
# both, best_vloss 6.4551 both; docs/evolve.md "Smoke run"). It still travels
# in genomes (charles_babbage has it); the duplicate check ignores it.
SPEED_ONLY = ("tiled_attention",)
# settings of a resumed run's evolve.json written before they existed: what that run did
LEGACY_CONFIG = {"rank_by": "fitness", "baseline": True, "parents": 2, "reuse": []}


class EvolveError(ValueError):
    pass


def known_components() -> tuple[str, ...]:
    from dreamteam import config

    return tuple(config.KNOWN_COMPONENTS)


def _model_defaults() -> dict:
    from dreamteam.config import GPTConfig

    return {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name != "components"}


def genome_of(persona) -> dict:
    """The genome of a persona: its components, its whole recipe, and its model options that differ from
    GPTConfig's defaults (JSON values: tuples as lists). persona_of(genome_of(p)) builds p's config and recipe."""
    defaults = _model_defaults()
    model = {k: getattr(persona.model, k) for k in defaults if getattr(persona.model, k) != defaults[k]}
    return runs.as_json({"name": persona.name, "components": list(persona.model.components),
                         "recipe": asdict(persona.recipe), "model": model})


def normalized(genome: dict) -> dict:
    """A genome with the whole recipe (Recipe's defaults for the settings an older genome.json lacks) and a
    model-options dict: what mutation, crossover and the duplicate check work on."""
    from dreamteam.config import RENAMED_OPTIONS, Recipe

    g = {"components": list(genome["components"]), "recipe": asdict(Recipe.from_fields(genome["recipe"])),
         "model": {RENAMED_OPTIONS.get(k, k): v for k, v in (genome.get("model") or {}).items()}}
    if "name" in genome:
        g["name"] = genome["name"]
    return g


def persona_of(genome: dict, model_options: dict | None = None):
    """The Persona a genome trains (the harness's runner builds the same): model options from the genome,
    then model_options (the run's own, e.g. a test's vocab_size) over them; JSON lists back to tuples."""
    from dreamteam import config
    from dreamteam.config import GPTConfig, Persona, Recipe

    opts = {**config.current_names(genome.get("model")), **config.current_names(model_options)}
    return Persona(genome.get("name", "genome"), GPTConfig.from_fields({**opts, "components": genome["components"]}),
                   Recipe.from_fields(genome["recipe"]), "registry genome")


def validate(genome: dict, model_options: dict) -> None:
    """Raise ConfigError (or TypeError, for an option GPTConfig or Recipe does not have) where the genome builds
    no model or recipe."""
    persona_of(genome, model_options)


def owner(key: str, components) -> str | None:
    """The component a setting belongs to: the longest component name that prefixes it (muon_lr -> muon,
    posterior_mean_decay -> posterior_mean, rms_qknorm_qk_gain -> rms_qknorm), None for a general one."""
    found = [c for c in components if key.startswith(c + "_")]
    return max(found, key=len) if found else None


def _switched_off(key: str, components) -> bool:
    """Whether `key` is a setting of a known component that is not in `components` (it changes nothing)."""
    c = owner(key, known_components())
    return c is not None and c not in components


def genome_key(genome: dict, model_options: dict | None = None) -> str:
    """What makes two genomes the same experiment: the set of components, the recipe and the model options
    that differ from the defaults (the run's options included), leaving out the SPEED_ONLY components, the
    settings of components that are switched off, and min_lr and warmup under a constant schedule."""
    from dreamteam.config import Recipe

    g = normalized(genome)
    comps = g["components"]
    defaults, base = _model_defaults(), asdict(Recipe())
    recipe = {k: base[k] if _switched_off(k, comps) else v for k, v in g["recipe"].items()}
    if recipe["schedule"] == "constant":  # which ignores min_lr and warmup
        recipe.update(min_lr=recipe["learning_rate"], warmup_iters=0)
    model = {k: v for k, v in runs.as_json({**g["model"], **(model_options or {})}).items()
             if (k not in defaults or runs.as_json(defaults[k]) != v) and not _switched_off(k, comps)}
    return json.dumps({"components": sorted(c for c in comps if c not in SPEED_ONLY), "recipe": recipe, "model": model},
                      sort_keys=True)


def _canonical(g: dict) -> dict:
    """After a mutation: a constant schedule ignores min_lr, which is set to the rate (as the baseline's is); a
    cosine schedule that would climb to min_lr decays to a tenth of the rate instead."""
    r = g["recipe"]
    if r["schedule"] == "constant":
        r["min_lr"] = r["learning_rate"]
    elif r["min_lr"] > r["learning_rate"]:
        r["min_lr"] = _round(r["learning_rate"] * 0.1)
    return g


def _round(x: float) -> float:
    """4 significant digits: a drawn rate reads cleanly, and 0.1 * 3e-3 equals 3e-4 (duplicates are found)."""
    return float(f"{x:.4g}")


def _fmt_value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def mutate(genome: dict, rng: np.random.Generator, components: tuple[str, ...]) -> tuple[dict, str]:
    """One change: switch a component on or off, or move one setting that matters for the genome (min_lr and
    warmup with a cosine schedule only; Muon's rate with muon; the average's decay with posterior_mean).
    Returns (child, description)."""
    g = normalized(genome)
    g.pop("name", None)
    r, model = g["recipe"], g["model"]
    if components and rng.random() < 0.5:
        c = components[rng.integers(len(components))]
        if c in g["components"]:
            g["components"].remove(c)
            return g, f"-{c}"
        g["components"].append(c)
        return g, f"+{c}"
    genes = ["learning_rate", "schedule", "weight_decay"]
    if r["schedule"] == "cosine":
        genes += ["warmup_iters", "min_lr"]
    if "muon" in g["components"]:
        genes.append("muon_lr")
    if "posterior_mean" in g["components"]:
        genes.append("posterior_mean_decay")
    key = genes[rng.integers(len(genes))]
    if key == "learning_rate":
        new = _round(float(np.clip(r["learning_rate"] * math.exp(rng.normal(0.0, LR_SIGMA)), *LR_RANGE)))
        r["min_lr"] = _round(r["min_lr"] * new / r["learning_rate"])  # the decay keeps its depth
        r["learning_rate"] = new
    elif key == "muon_lr":
        r["muon_lr"] = _round(float(np.clip(r["muon_lr"] * math.exp(rng.normal(0.0, LR_SIGMA)), *MUON_LR_RANGE)))
    elif key == "min_lr":
        fractions = [f for f in CHOICES["min_lr_fraction"] if not math.isclose(r["min_lr"], r["learning_rate"] * f)]
        r["min_lr"] = _round(r["learning_rate"] * float(fractions[rng.integers(len(fractions))]))
    elif key == "posterior_mean_decay":
        current = model.get(key, _model_defaults()[key])
        options = [x for x in CHOICES[key] if x != current]
        model[key] = options[rng.integers(len(options))]
        return g, f"{key}={model[key]}"
    else:
        options = [x for x in CHOICES[key] if x != r[key]]
        r[key] = options[rng.integers(len(options))]
        if key == "schedule" and r[key] == "cosine":
            r["min_lr"] = _round(r["learning_rate"] * 0.1)
    _canonical(g)
    return g, f"{key}={_fmt_value(r[key])}"


def crossover(a: dict, b: dict, rng: np.random.Generator) -> dict:
    """Uniform crossover: each component present in either parent is taken from a parent drawn at random; each
    recipe setting and model option from a parent drawn at random, except that a setting of a component the
    child has (owner()) comes from the parent that component came from. A model option the drawn parent does
    not set is left at its default, and one of a component the child lacks is dropped."""
    a, b = normalized(a), normalized(b)
    source: dict[str, dict] = {}
    comps = []
    for c in dict.fromkeys(a["components"] + b["components"]):
        p = a if rng.random() < 0.5 else b
        if c in p["components"]:
            comps.append(c)
            source[c] = p

    def parent_for(key):
        drawn = a if rng.random() < 0.5 else b  # drawn for every key, so that the draws do not depend on ownership
        return source.get(owner(key, comps), drawn)

    recipe = {k: parent_for(k)["recipe"][k] for k in a["recipe"]}
    model = {}
    for k in dict.fromkeys(list(a["model"]) + list(b["model"])):
        p = parent_for(k)
        if k in p["model"] and not _switched_off(k, comps):
            model[k] = p["model"][k]
    return {"components": comps, "recipe": recipe, "model": model}


def label(genome: dict) -> str:
    """The components switched on, then the recipe settings and model options that differ from the baseline's
    (those of components switched off, and min_lr and warmup under a constant schedule, left out)."""
    from dreamteam.config import Recipe

    base = asdict(Recipe())
    defaults = _model_defaults()
    comps = genome["components"]
    ignored = ("min_lr", "warmup_iters") if genome["recipe"].get("schedule", "constant") == "constant" else ()
    diff = [f"{k}={_fmt_value(v)}" for k, v in genome["recipe"].items()
            if base.get(k) != v and not _switched_off(k, comps) and k not in ignored]
    diff += [f"{k}={_fmt_value(v)}" for k, v in (genome.get("model") or {}).items()
             if k in defaults and runs.as_json(defaults[k]) != v and k != "vocab_size" and not _switched_off(k, comps)]
    return " ".join(["+".join(genome["components"]) or "baseline-arch"] + diff)


def rank_key(m: dict | None, by: str = "val_loss") -> tuple:
    """Failed last, then invalid, then by the mean val_loss (or fitness), lower is better; the other figure
    breaks ties. A candidate not evaluated yet sorts after every evaluated one."""
    if m is None:
        return (True, True, math.inf, math.inf)
    vl = m.get("val_loss")
    vl = math.inf if vl is None else vl
    fit = m.get("fitness", math.inf)
    fit = math.inf if fit is None else fit
    return (m.get("status") != "ok", not m.get("valid"), *((vl, fit) if by == "val_loss" else (fit, vl)))


def _pick(parents: list, rng, exclude: int | None = None) -> int:
    """A parent's index, drawn with weights K, K-1, ..., 1 by rank (best first)."""
    w = np.array([0.0 if i == exclude else len(parents) - i for i in range(len(parents))])
    return int(rng.choice(len(parents), p=w / w.sum()))


def _offspring(parents: list[dict], rng, components, model_options, seen: set) -> tuple[dict, str]:
    def name(p):
        return p.get("name", "parent")

    for _ in range(200):
        if len(parents) >= 2 and rng.random() < 0.5:
            i = _pick(parents, rng)
            j = _pick(parents, rng, exclude=i)
            child = crossover(parents[i], parents[j], rng)
            how = f"crossover of {name(parents[i])} and {name(parents[j])}"
            if rng.random() < 0.5:
                child, m = mutate(child, rng, components)
                how += f", then {m}"
        else:
            p = parents[_pick(parents, rng)]
            child, m = mutate(p, rng, components)
            how = f"mutation {m} of {name(p)}"
        if _admit(child, model_options, seen):
            return child, how
    raise EvolveError("no new valid genome in 200 tries: the search space is exhausted")


def _admit(child: dict, model_options, seen: set) -> bool:
    """Whether `child` is new (not in `seen`) and builds; then it is added to `seen`."""
    key = genome_key(child, model_options)
    if key in seen:
        return False
    try:
        validate(child, model_options)
    except (ValueError, TypeError):
        return False
    seen.add(key)
    return True


def _crosses(personas: list[dict], rng, model_options, seen: set, tries: int = 200):
    """Yields (child, description): uniform crosses of two distinct personas, valid and new."""
    for _ in range(tries):
        i, j = rng.choice(len(personas), size=2, replace=False)
        child = crossover(personas[i], personas[j], rng)
        if _admit(child, model_options, seen):
            yield child, f"cross of the personas {personas[i]['name']} and {personas[j]['name']}"


def _candidates(out: Path) -> list[tuple[str, dict, dict]]:
    """(gen/cand, population entry, metrics) for every evaluated candidate so far."""
    found = []
    for pop_file in sorted(out.glob("gen_*/population.json")):
        for entry in json.loads(pop_file.read_text()):
            d = pop_file.parent / entry["id"]
            if (d / "metrics.json").exists():
                found.append((f"{pop_file.parent.name}/{entry['id']}", entry, json.loads((d / "metrics.json").read_text())))
    return found


def _genome(out: Path, key: str) -> dict:
    g = json.loads((out / key / "genome.json").read_text())
    g.setdefault("name", key)
    return g


def _best_genomes(out: Path, ranked, model_options, k: int) -> list[tuple[str, dict]]:
    """The k best distinct valid genomes (an elite's carried copy counts once): [(gen/cand, genome)]."""
    chosen, keys = [], set()
    for key, e, m in ranked:
        if e["kind"] != "genome" or m.get("status") != "ok" or not m.get("valid"):
            continue
        g = _genome(out, key)
        gk = genome_key(g, model_options)
        if gk not in keys:
            keys.add(gk)
            chosen.append((key, g))
        if len(chosen) == k:
            break
    return chosen


def _persona_prompts(folder) -> list[Path]:
    if folder is None:
        return []
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".md", ".txt") and p.is_file())
    if not files:
        raise EvolveError(f"no persona prompts (*.md, *.txt) in {folder}")
    return files


def make_population(out: Path, gen: int, P: int, cfg: dict) -> list[dict]:
    """Create generation gen's candidate folders and population.json (once; a resumed run reads it back)."""
    from dreamteam import registry
    from dreamteam.tools import propose

    gdir = out / f"gen_{gen:03d}"
    pop_file = gdir / "population.json"
    if pop_file.exists():
        return json.loads(pop_file.read_text())
    gdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg["rng_seed"], gen])
    components = tuple(cfg["components"])
    model_options = cfg["model_options"]
    rank_by = cfg.get("rank_by", "val_loss")
    entries: list[dict] = []

    def add_genome(genome, origin):
        cid = f"cand_{len(entries):02d}"
        d = gdir / cid
        d.mkdir(exist_ok=True)
        genome = {"name": genome.get("name") or f"g{gen}-{cid}", "components": genome["components"],
                  "recipe": genome["recipe"], "model": {**(genome.get("model") or {}), **model_options}}
        runs.write_json_atomic(d / "genome.json", genome)
        entries.append({"id": cid, "kind": "genome", "origin": origin, "label": label(genome)})

    history = _candidates(out)
    ranked = sorted(history, key=lambda t: rank_key(t[2], rank_by))
    seen = {genome_key(_genome(out, k), model_options) for k, e, _ in history if e["kind"] == "genome"}

    if gen == 0:
        parents = []
        if cfg.get("baseline", True):
            base = genome_of(registry.BASELINE)
            add_genome(base, "the registry baseline (measured, same seeds)")
            seen.add(genome_key(base, model_options))
            parents = [base]
    else:
        best_key, best_entry, _ = ranked[0]
        cid = f"cand_{len(entries):02d}"
        shutil.copytree(out / best_key, gdir / cid, ignore=shutil.ignore_patterns(".harness", "runs"), dirs_exist_ok=True)
        entries.append({"id": cid, "kind": best_entry["kind"], "origin": f"elite: {best_key} carried over with its measurements",
                        "label": best_entry["label"], "carried": best_key})
        parents = [g for _, g in _best_genomes(out, ranked, model_options, cfg.get("parents", 4))]
        if not parents:
            parents = [genome_of(registry.BASELINE)]

    # persona proposals from the best code candidate so far (the project's own files at first)
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

    if gen == 0:  # the registered personas, exactly as registered, then crosses of two of them
        personas = []
        for name, persona in sorted(registry.PERSONAS.items()):
            if name == "baseline":
                continue
            g = genome_of(persona)
            try:
                validate(g, model_options)
            except (ValueError, TypeError):
                continue
            personas.append(g)
            if len(entries) < P:
                add_genome(g, f"the registered persona {name}")
                seen.add(genome_key(g, model_options))
        if len(personas) >= 2:
            crosses = _crosses(personas, rng, model_options, seen)
            while len(entries) < P:
                child = next(crosses, None)
                if child is None:
                    break
                add_genome(*child)
        parents = personas or parents
    while len(entries) < P:
        child, how = _offspring(parents or [genome_of(registry.BASELINE)], rng, components, model_options, seen)
        add_genome(child, how)
    runs.write_json_atomic(pop_file, entries)
    return entries


def _evaluate_all(gdir: Path, entries: list[dict], cfg: dict) -> None:
    todo = [e for e in entries if not (gdir / e["id"] / "metrics.json").exists()]
    if not todo:
        return
    kwargs = {"seeds": cfg["seeds"], "timeout_min": cfg["timeout_min"], "device": cfg["device"], "data_dir": cfg["data_dir"],
              "max_iters": cfg["max_iters"], "val_windows": cfg["val_windows"], "threads": cfg["threads"],
              # a run's own model options (a test's vocabulary) train other models than the records hold
              "reuse": () if cfg["model_options"] else (cfg.get("reuse") or ())}
    if cfg["executor"] == "local" and kwargs["threads"] is None and cfg["workers"] > 1 and "OMP_NUM_THREADS" not in os.environ:
        # concurrent evaluations share the cores instead of fighting over them
        kwargs["threads"] = max(1, (os.cpu_count() or 1) // cfg["workers"])
    # threads, not processes, for a local pool: each evaluation is a process of its own already
    executors.run(evaluate_seeds, [dict(kwargs, cand_dir=str(gdir / e["id"])) for e in todo], executor=cfg["executor"],
                  workers=cfg["workers"] if cfg["executor"] == "local" else cfg.get("ray_cpus"),
                  ray_address=cfg.get("ray_address"), processes=False)


def reused_measurement(cand_dir, genome: dict, seed: int, folders, *, device: str, data_dir: str, max_iters=None,
                       val_windows=None) -> dict | None:
    """The evaluation of a registry genome at `seed` read from a run record of `dreamteam bench` under `folders`
    (written as metrics_sS.json, the record copied to run_sS.json), or None where no record measured it. A
    record counts only when it trained exactly this genome (bench.same_spec: the config and recipe `dreamteam
    bench` would skip as done already) at this seed, on this kind of device, from this data folder, at the
    protocol's length and shapes, with val_loss on the whole validation set. train() is the function both the
    harness and bench run, so the figures are those of a rerun up to the processor and the load, which the
    record names; the newest matching record is taken."""
    from dreamteam import protocol
    from dreamteam.tools.bench import find_record, read_records, spec_fields

    iters = max_iters or protocol.MAX_ITERS
    if not folders or val_windows is not None or "components" not in genome:
        return None
    records = [pr for folder in folders if Path(folder).is_dir() for pr in read_records(folder)]
    found = find_record(records, spec_fields(persona_of(genome)), seed, device, data_dir, iters)
    if found is None:
        return None
    path, r = found
    versions = r.get("versions") or {}
    source = {"file": str(path), "command": r.get("command"), "git_commit": versions.get("git_commit"),
              "processor": versions.get("processor")}
    message = (f"registry genome measured by `dreamteam bench` ({path.name}, commit {str(source['git_commit'])[:12]}, "
               f"{source['processor']}): the same train(), not rerun")
    m = {"dir": str(cand_dir), "status": "ok", "reason": None, "valid": True, "best_vloss": r["best_vloss"],
         "elapsed_min": r["elapsed_min"], "fitness": r["fitness"], "val_loss": r["val_loss"], "val_loss_absent": None,
         "val_windows": None, "n_params": r.get("n_params"), "seed": seed, "device": r["device"],
         "data_dir": r["data_dir"], "max_iters": iters, "protocol_run": iters == protocol.MAX_ITERS, "reused": source,
         "check": {"valid": True, "static": [], "dynamic": [], "dynamic_run": False, "completed": True,
                   "substitutions": [{"line": None, "what": "reused", "message": message}]}}
    runs.write_json_atomic(Path(cand_dir) / f"metrics_s{seed}.json", m)
    shutil.copyfile(path, Path(cand_dir) / f"run_s{seed}.json")
    return m


def evaluate_seeds(cand_dir: str, seeds, reuse=(), **kwargs) -> dict:
    """Evaluate at every seed (metrics_sS.json) and aggregate into metrics.json: means over seeds; failed or
    invalid if any seed is. reuse: folders of `dreamteam bench` run records; a registry genome's seed that one of
    them measured is read from it (reused_measurement) instead of trained again."""
    per = []
    genome_file = Path(cand_dir) / "genome.json"
    genome = json.loads(genome_file.read_text()) if reuse and genome_file.exists() else None
    for s in seeds:
        name = f"metrics_s{s}.json"
        p = Path(cand_dir) / name
        if p.exists():
            per.append(json.loads(p.read_text()))
            continue
        m = genome and reused_measurement(cand_dir, genome, s, reuse, device=kwargs["device"],
                                          data_dir=kwargs["data_dir"], max_iters=kwargs.get("max_iters"),
                                          val_windows=kwargs.get("val_windows"))
        per.append(m or harness.evaluate(cand_dir, seed=s, metrics_name=name, **kwargs))
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
        "reused_seeds": [m["seed"] for m in per if m.get("reused")],  # read from bench records, not trained again
    }
    runs.write_json_atomic(Path(cand_dir) / "metrics.json", agg)
    return agg


def _keep_run_records(cand_dir: Path) -> None:
    """train()'s run record of each seed (the val_loss curve every 1000 iterations, timings, load), copied from
    the evaluation's work folder (.harness/, which git ignores) to cand_dir/run_sS.json."""
    latest = {}
    for rec in sorted(Path(cand_dir).glob(".harness/seed*/runs/*.json")):  # names end in a time stamp
        latest[rec.parent.parent.name[len("seed"):]] = rec
    for seed, rec in latest.items():
        shutil.copyfile(rec, Path(cand_dir) / f"run_s{seed}.json")


def _run_config(out: Path) -> dict:
    state = out / "evolve.json"
    return {**LEGACY_CONFIG, **json.loads(state.read_text())["config"]} if state.exists() else {"rank_by": "val_loss"}


def confirm(out: Path, cfg: dict, k: int, seeds, log=print) -> list[dict]:
    """Evaluate the k best distinct valid genomes of the search at every seed of `seeds` (a seed they were
    measured at is not rerun) in DIR/confirm/, and rank them by their means: DIR/confirm/summary.json."""
    cdir = out / "confirm"
    sel_file = cdir / "selection.json"
    seeds = list(seeds)
    if sel_file.exists():  # a resumed confirmation keeps its candidates
        sel = json.loads(sel_file.read_text())
        if sel["k"] != k or sel["seeds"] != seeds:
            raise EvolveError(f"{cdir} confirms {sel['k']} genome(s) at seeds {sel['seeds']}; asked for {k} at {seeds}")
        entries = sel["candidates"]
    else:
        ranked = sorted(_candidates(out), key=lambda t: rank_key(t[2], cfg["rank_by"]))
        best = _best_genomes(out, ranked, cfg["model_options"], k)
        if not best:
            raise EvolveError(f"no valid evaluated genome in {out} to confirm")
        entries = []
        for i, (key, g) in enumerate(best):
            cid = f"cand_{i:02d}"
            shutil.copytree(out / key, cdir / cid, ignore=shutil.ignore_patterns(".harness", "runs", "metrics.json"), dirs_exist_ok=True)
            entries.append({"id": cid, "kind": "genome", "from": key, "label": label(g), "origin": f"rank {i + 1} of the search ({key})"})
        runs.write_json_atomic(sel_file, {"k": k, "seeds": seeds, "rank_by": cfg["rank_by"], "candidates": entries})
    log(f"confirmation: {len(entries)} genome(s) at seeds {seeds}")
    _evaluate_all(cdir, entries, {**cfg, "seeds": seeds})
    rows = []
    for e in entries:
        d = cdir / e["id"]
        _keep_run_records(d)
        m = json.loads((d / "metrics.json").read_text())
        vls = [json.loads((d / f"metrics_s{s}.json").read_text()).get("val_loss") for s in seeds]
        std = float(np.std(vls, ddof=1)) if len(vls) > 1 and None not in vls and m["status"] == "ok" else None
        rows.append({**e, "status": m["status"], "valid": m["valid"], "val_loss": m["val_loss"], "val_loss_std": std,
                     "val_loss_per_seed": vls, "best_vloss": m["best_vloss"], "elapsed_min": m["elapsed_min"],
                     "fitness": m["fitness"], "fitness_std": m.get("fitness_std")})
    rows.sort(key=lambda r: rank_key(r, cfg["rank_by"]))
    runs.write_json_atomic(cdir / "summary.json", {"seeds": seeds, "rank_by": cfg["rank_by"], "ranked": rows})
    return rows


def _fmt(x, nd=4):
    return "-" if x is None else ("inf" if x == math.inf else f"{x:.{nd}f}")


def _generations(out: Path) -> list[tuple[str, list[tuple[dict, dict | None]]]]:
    """[(gen_NNN, [(population entry, metrics or None)])]"""
    found = []
    for pop_file in sorted(out.glob("gen_*/population.json")):
        rows = []
        for e in json.loads(pop_file.read_text()):
            p = pop_file.parent / e["id"] / "metrics.json"
            rows.append((e, json.loads(p.read_text()) if p.exists() else None))
        found.append((pop_file.parent.name, rows))
    return found


def best_per_generation(out: Path, rank_by: str | None = None) -> list[dict]:
    """Per generation: its best candidate (by rank_by) and the best val_loss so far (valid, finished candidates)."""
    rank_by = rank_by or _run_config(out)["rank_by"]
    rows, so_far = [], math.inf
    for gname, cands in _generations(out):
        done = [(e, m) for e, m in cands if m is not None and m["status"] == "ok" and m["valid"]]
        if not done:
            continue
        e, m = min(done, key=lambda t: rank_key(t[1], rank_by))
        vals = [m2["val_loss"] for _, m2 in done if m2.get("val_loss") is not None]
        so_far = min([so_far] + vals)
        rows.append({"generation": gname, "best": e["id"], "label": e["label"], "val_loss": m.get("val_loss"),
                     "fitness": m.get("fitness"), "best_val_loss_so_far": so_far if so_far < math.inf else None,
                     "evaluated": len([x for x in cands if x[1] is not None]), "population": len(cands)})
    return rows


def _table_lines(out: Path, h: str = "#") -> list[str]:
    """The generation table (h: the heading level of the title; sections one level below)."""
    rank_by = _run_config(out)["rank_by"]
    other = "fitness" if rank_by == "val_loss" else "val_loss"
    s = h + "#"
    lines = [f"{h} Generations", "",
             f"Ranked by {rank_by} ({other} beside it): val_loss is the mean over seeds of the whole-validation loss of the "
             "trained model; fitness the mean over seeds of best_vloss + 0.01 * elapsed_min (DreamTeam's). Failed "
             "candidates last, then invalid ones.", "",
             f"{s} Best per generation", "",
             f"| generation | best candidate (by {rank_by}) | val_loss | fitness | best val_loss so far | evaluated | label |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in best_per_generation(out, rank_by):
        lines.append(f"| {r['generation']} | {r['best']} | {_fmt(r['val_loss'])} | {_fmt(r['fitness'])} | "
                     f"{_fmt(r['best_val_loss_so_far'])} | {r['evaluated']}/{r['population']} | {r['label']} |")
    lines.append("")
    for gname, cands in _generations(out):
        cands = sorted(cands, key=lambda r: rank_key(r[1], rank_by))
        lines += [f"{s} {gname}", "",
                  "| rank | candidate | kind | label | origin | status | valid | val_loss | best_vloss | elapsed_min | fitness | n_params |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for i, (e, m) in enumerate(cands, 1):
            if m is None:
                lines.append(f"| {i} | {e['id']} | {e['kind']} | {e['label']} | {e['origin']} | not evaluated | | | | | | |")
                continue
            status = m["status"] if m["status"] == "ok" else f"failed: {m['reason']}"
            if m.get("reused_seeds"):
                status += f" (bench record, seed {', '.join(map(str, m['reused_seeds']))})"
            lines.append(f"| {i} | {e['id']} | {e['kind']} | {e['label']} | {e['origin']} | {status} | {'yes' if m['valid'] else 'NO'} | "
                         f"{_fmt(m.get('val_loss'))} | {_fmt(m['best_vloss'])} | {_fmt(m['elapsed_min'], 3)} | {_fmt(m['fitness'])} | "
                         f"{m.get('n_params') or '-'} |")
        lines.append("")
    summary = out / "confirm" / "summary.json"
    if summary.exists():
        c = json.loads(summary.read_text())
        lines += [f"{s} Confirmation at seeds {', '.join(map(str, c['seeds']))}", "",
                  f"Mean ± sample standard deviation over the seeds; ranked by {c['rank_by']}.", "",
                  "| rank | genome | label | status | val_loss | val_loss per seed | best_vloss | elapsed_min | fitness |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for i, r in enumerate(c["ranked"], 1):
            vl = f"{_fmt(r['val_loss'])} ± {_fmt(r['val_loss_std'])}" if r["val_loss_std"] is not None else _fmt(r["val_loss"])
            status = r["status"] if r["valid"] or r["status"] != "ok" else "INVALID"
            lines.append(f"| {i} | {r['from']} | {r['label']} | {status} | {vl} | {', '.join(_fmt(v) for v in r['val_loss_per_seed'])} | "
                         f"{_fmt(r['best_vloss'])} | {_fmt(r['elapsed_min'], 3)} | {_fmt(r['fitness'])} |")
        lines.append("")
    return lines


def write_table(out: Path) -> Path:
    """generations.md: the best per generation, every candidate of every generation ranked within its
    generation, and the confirmation."""
    path = Path(out) / "generations.md"
    path.write_text("\n".join(_table_lines(Path(out))))
    return path


def plot(out: Path, path) -> Path:
    """The val_loss of every valid candidate per generation, each generation's best and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    best = best_per_generation(out)
    if not best:
        raise EvolveError(f"no evaluated valid candidate in {out} to plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for g, (gname, cands) in enumerate(_generations(out)):
        vals = [m["val_loss"] for e, m in cands if m and m["status"] == "ok" and m["valid"] and m.get("val_loss") is not None
                and "carried" not in e]
        ax.scatter([g] * len(vals), vals, s=14, color="0.6", zorder=2, label="candidate" if g == 0 else None)
    xs = [int(r["generation"].split("_")[1]) for r in best]
    ax.plot(xs, [r["val_loss"] for r in best], "o-", color="tab:blue", zorder=3, label="best of the generation")
    ax.step(xs, [r["best_val_loss_so_far"] for r in best], where="post", color="tab:red", zorder=4, label="best so far")
    ax.set_xlabel("generation")
    ax.set_ylabel("val_loss (whole validation set)")
    ax.set_xticks(range(len(_generations(out))))
    seeds = _run_config(out).get("seeds", [])
    ax.set_title(f"{out.name}: val_loss per generation (seeds {', '.join(map(str, seeds))})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


DOC_BEGIN = "<!-- evolve-table:begin"
DOC_END = "<!-- evolve-table:end -->"


def write_doc(out: Path, doc) -> Path:
    """Replace the block between the markers `<!-- evolve-table:begin ... -->` and `<!-- evolve-table:end -->`
    of the Markdown file `doc` by the search's record and its generation table."""
    doc = Path(doc)
    text = doc.read_text() if doc.exists() else ""
    i, j = text.find(DOC_BEGIN), text.find(DOC_END)
    if i < 0 or j < i:
        raise EvolveError(f"{doc} has no block {DOC_BEGIN} -->...{DOC_END} to write the table into")
    i = text.index("-->", i) + 3
    state = json.loads((Path(out) / "evolve.json").read_text())
    rec, cfg = state.get("record") or {}, state["config"]
    lines = ["", "", f"Written by `dreamteam evolve --out {out} --table-only --doc {doc}` from the run folder.", "",
             f"- command: `{' '.join(rec.get('command') or ['?'])}`",
             f"- commit: `{rec.get('git_commit')}`; processor: {rec.get('processor')} ({rec.get('cpu_count')} cores); "
             f"started {rec.get('started')}; workers {rec.get('workers')}, OMP_NUM_THREADS={rec.get('omp_num_threads')}",
             f"- seeds {cfg['seeds']}; population {cfg['population']}; ranked by {cfg.get('rank_by', 'fitness')}; "
             f"rng seed {cfg['rng_seed']}; device {cfg['device']}; "
             f"{'full protocol runs' if cfg['max_iters'] is None else str(cfg['max_iters']) + ' iterations (NOT the protocol)'}"]
    lines += [f"- resumed: `{' '.join(r.get('command') or ['?'])}` at {r.get('at')} (commit `{r.get('git_commit')}`)"
              for r in state.get("resumes", [])]
    lines += [""] + _table_lines(Path(out), h="###") + [""]
    doc.write_text(text[:i] + "\n".join(lines) + text[j:])
    return doc


def default_workers() -> int:
    """Half the cores (at least 1): each evaluation gets cores of its own, since elapsed_min is part of fitness."""
    return max(1, (os.cpu_count() or 1) // 2)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def evolve(out, generations: int, population: int, *, seeds=(0,), executor="local", workers=None, llm_command=None,
           persona_prompts=None, device="cpu", data_dir=None, timeout_min=120.0, max_iters=None, val_windows=None,
           model_options=None, rng_seed=0, threads=None, ray_address=None, environ=None, log=print,
           rank_by="val_loss", baseline=True, parents=4, confirm_k=0, confirm_seeds=(0, 1, 2), command=None,
           allow_other_commit=False, reuse=()) -> Path:
    from dreamteam import data

    if generations < 1 or population < 2:
        raise EvolveError(f"need generations >= 1 and population >= 2; got {generations}, {population}")
    if executor not in executors.EXECUTORS:
        raise EvolveError(f"unknown executor {executor!r}; expected one of {', '.join(executors.EXECUTORS)}")
    if rank_by not in RANK_BY:
        raise EvolveError(f"unknown ranking {rank_by!r}; expected one of {list(RANK_BY)}")
    if parents < 1 or confirm_k < 0:
        raise EvolveError(f"need parents >= 1 and confirm >= 0; got {parents}, {confirm_k}")
    if persona_prompts and not llm_command:
        raise EvolveError("--persona-prompts needs --llm-command (the program that answers them)")
    ray_cpus, workers = workers, workers or default_workers()  # Ray's local instance: all CPUs unless --workers
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"seeds": list(seeds), "device": device, "data_dir": str(data.find_data_dir(data_dir, environ)),
           "max_iters": max_iters, "val_windows": val_windows, "model_options": dict(model_options or {}),
           "rng_seed": rng_seed, "population": population, "components": list(known_components()),
           "rank_by": rank_by, "baseline": bool(baseline), "parents": parents,
           "reuse": [str(Path(f).resolve()) for f in reuse]}
    commit = runs.git_commit()
    this = {"command": list(command) if command else None, "git_commit": commit, "at": _now(), "workers": workers,
            "executor": executor, "omp_num_threads": (environ or {}).get("OMP_NUM_THREADS")}
    state_file = out / "evolve.json"
    if state_file.exists():  # a resumed run must be the same experiment, from the same code
        state = json.loads(state_file.read_text())
        old = {**LEGACY_CONFIG, **state["config"]}
        diff = {k: (old.get(k), v) for k, v in cfg.items() if old.get(k) != v}
        if diff:
            raise EvolveError(f"{out} holds a run with other settings {diff}; use another --out")
        started = (state.get("record") or {}).get("git_commit")
        if started and started != commit and not allow_other_commit:
            raise EvolveError(f"{out} was started at commit {started}; this code is at {commit}. Resume from a checkout of "
                              f"{started} (benchmarks/run_search.sh makes one), or pass --allow-other-commit")
        record, resumes = state.get("record"), state.get("resumes", []) + [this]
        log(f"resuming the run in {out}")
    else:
        record = {**this, "started": this.pop("at"), "processor": runs.processor_name(), "cpu_count": os.cpu_count(),
                  "python": sys.version.split()[0]}
        resumes = []
    state = {"config": cfg, "generations": generations, "record": record, "resumes": resumes}
    if confirm_k:
        state["confirm"] = {"k": confirm_k, "seeds": list(confirm_seeds)}
    runs.write_json_atomic(state_file, state)
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
        for e in entries:
            _keep_run_records(gdir / e["id"])
        ms = {e["id"]: json.loads((gdir / e["id"] / "metrics.json").read_text()) for e in entries}
        best = min(ms, key=lambda k: rank_key(ms[k], rank_by))
        runs.write_json_atomic(gdir / "summary.json", {
            "generation": gen, "rank_by": rank_by, "best": best, "best_val_loss": ms[best]["val_loss"],
            "best_fitness": ms[best]["fitness"], "val_loss": {k: m["val_loss"] for k, m in ms.items()},
            "fitness": {k: m["fitness"] for k, m in ms.items()}})
        write_table(out)
        log(f"generation {gen}: best {best} val_loss {_fmt(ms[best]['val_loss'])} fitness {_fmt(ms[best]['fitness'])} "
            f"({'valid' if ms[best]['valid'] else 'INVALID'})")
    if confirm_k:
        rows = confirm(out, cfg, confirm_k, confirm_seeds, log)
        log(f"confirmation: best {rows[0]['from']} val_loss {_fmt(rows[0]['val_loss'])} ± {_fmt(rows[0]['val_loss_std'])}")
    return write_table(out)


def add_arguments(p) -> None:
    from dreamteam import arguments

    p.add_argument("--generations", type=arguments.positive_int, default=None, help="generations to run; needed unless --table-only (no default)")
    p.add_argument("--population", type=arguments.positive_int, default=None,
                   help="candidates per generation (at least 2); needed unless --table-only (no default)")
    p.add_argument("--out", required=True, help="the run's folder; an interrupted run resumes from it")
    p.add_argument("--seeds", type=arguments.seed, nargs="+", default=[0], help="every candidate, the baseline included, runs at each")
    p.add_argument("--rank-by", choices=list(RANK_BY), default="val_loss",
                   help="what picks the elite and the parents and orders the tables (val_loss: the honest figure)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="generation 0 without the registry baseline (its slot goes to a cross of personas)")
    p.add_argument("--parents", type=arguments.positive_int, default=4, metavar="K",
                   help="children are bred from the K best valid genomes so far")
    p.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="after the last generation, evaluate the K best distinct genomes at --confirm-seeds (DIR/confirm/)")
    p.add_argument("--confirm-seeds", type=arguments.seed, nargs="+", default=[0, 1, 2], help="seeds of the confirmation runs")
    p.add_argument("--table-only", action="store_true", help="write DIR/generations.md (and --plot, --doc) from the run folder; run nothing")
    p.add_argument("--plot", default=None, metavar="PNG", help="plot the val_loss per generation into PNG (default: no plot)")
    p.add_argument("--doc", default=None, metavar="MD",
                   help="write the search's record and table into MD, between <!-- evolve-table:begin --> and "
                        "<!-- evolve-table:end --> (default: no doc)")
    p.add_argument("--allow-other-commit", action="store_true", help="resume a run started at another commit")
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
    p.add_argument("--reuse-records", nargs="+", default=[], metavar="DIR",
                   help="folders of `dreamteam bench` run records: a registry genome at a seed that a record measured exactly "
                        "(same config, recipe, seed, device kind, data, protocol) is read from it, not trained again "
                        "(default: none)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a GPTConfig field for every genome (tests and smoke runs: e.g. vocab_size=256 with a small-vocabulary "
                        "data set; default: none)")


def main(args) -> int:
    out = Path(args.out)
    try:
        if args.table_only:
            if not (out / "evolve.json").exists():
                raise EvolveError(f"{out} holds no evolve run (no evolve.json)")
            path = write_table(out)
        else:
            if args.generations is None or args.population is None:
                raise EvolveError("--generations and --population are needed (or --table-only)")
            options = {}
            for kv in args.model_option:
                k, _, v = kv.partition("=")
                options[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
            path = evolve(args.out, args.generations, args.population, seeds=args.seeds, executor=args.executor,
                          workers=args.workers, llm_command=args.llm_command, persona_prompts=args.persona_prompts,
                          device=args.device, data_dir=args.data_dir, timeout_min=args.timeout, max_iters=args.max_iters,
                          val_windows=args.val_windows, model_options=options, rng_seed=args.rng_seed, ray_address=args.ray_address,
                          environ=os.environ, rank_by=args.rank_by, baseline=args.baseline, parents=args.parents,
                          confirm_k=args.confirm, confirm_seeds=args.confirm_seeds, command=["dreamteam"] + sys.argv[1:],
                          allow_other_commit=args.allow_other_commit, reuse=args.reuse_records)
        print(f"generation table: {path}")
        if args.plot:
            print(f"plot: {plot(out, args.plot)}")
        if args.doc:
            print(f"doc: {write_doc(out, args.doc)}")
    except (EvolveError, executors.ExecutorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
