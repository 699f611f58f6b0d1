"""The benchmark sweep: personas x seeds, each one a protocol run through `train_mps.train()`.

    dreamteam bench --personas baseline [NAME ...] --seeds 0 1 2 --device auto --out runs/
                    [--max-iters N] [--ablate NAME] [--set KEY=VALUE ...] [--data-dir DIR] [--no-progress] [--threads N]
                    [--executor local|ray] [--workers N] [--ray-address ADDRESS] [--reuse-records DIR ...]

Where the runs go: one after the other in this process (the default), `--workers N` of them at once on
this machine (each process with its share of the cores), or `--executor ray` on a local Ray instance or,
with `--ray-address`, an existing cluster; the same executors as `dreamteam evolve` (dreamteam/tools/executors.py).

Every run is exactly what DreamTeam calls, `train_mps.train(persona, seed, ...)`, which writes one JSON
record per run into the out folder (`dreamteam report` reads them). `--threads N` is passed to every run
(torch's thread count; 1 when sharing the machine).

Recipe tuning: `--set KEY=VALUE` (repeatable) changes a field of the Recipe or of the model's GPTConfig
for every planned persona, labelled `persona@KEY=VALUE`, so that tuning runs sit beside the persona's own
(`dreamteam report` tables them as "Recipe tuning"). A tuned recipe is then written into the registry.

Resuming: a run is skipped when the out folder already holds a record with status "ok" and the same key
(persona, seed, device type, max_iters, dreamteam version) whose recorded config and recipe are the ones
the persona has now: after a registry change (a tuned recipe) the persona's runs are done again, except
those already trained with the tuned recipe as `persona@KEY=VALUE` (the same config and recipe: the same
run; `dreamteam report` counts them in the persona's row too). The code
version is the package version `dreamteam.__version__`, not the git commit: the commit turns "-dirty" on any edit (a README change
included) and changes with every commit, so keying on it would rerun everything during development.
Bump `dreamteam.__version__` when a change should invalidate earlier results. Failed runs are rerun.

Reusing: `--reuse-records DIR ...` names folders of run records made under other labels (an evolutionary
search's folder, results/evolve/NAME, whose candidates are run records too). A run not done in the out folder
that one of them holds exactly (the same config and recipe, seed, device type, data folder, length and shapes)
is copied in under the planned label, with `reused` naming the file and label it was trained as, instead of
being trained again: a search's winner registered as a persona keeps the search's measurements.

Order: seed-major (every persona with seed 0, then seed 1, ...), so that an interrupted sweep already
holds comparable runs of every persona.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dreamteam
from dreamteam import protocol, registry
from dreamteam.config import OPTION_OWNERS, RENAMED_OPTIONS, GPTConfig, Persona, Recipe
from dreamteam.settings import SettingError, parse_settings, with_settings  # noqa: F401 (bench's API)
from dreamteam.runs import as_json, run_name, write_json_atomic

# The keys that make a JSON file a run record (train_mps.train writes them before any training).
RECORD_KEYS = ("persona", "seed", "device", "max_iters", "status")


# one clear error of a sweep or a report (a bad --set is one too, raised by the core's settings)
BenchError = SettingError


@dataclass
class SweepResult:
    """What a sweep did: the (persona, seed) pairs it trained, skipped, reused and saw fail."""

    ran: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    reused: list[tuple[str, int]] = field(default_factory=list)  # copied from a --reuse-records folder
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # persona, seed, "ErrorType: message"


def device_type(device: str) -> str:
    """'cuda:1' -> 'cuda': runs on any device of one type are comparable."""
    return str(device).split(":")[0]


def base_label(label: str) -> str:
    """'alan_turing@good_turing_prior_lr_ratio=0.1' -> 'alan_turing', and 'ada_lovelace+byte_ngram_embedding-
    adaptive_softmax' -> 'ada_lovelace': the persona a `--set` run or a component variant starts from (a
    registered name is its own base). Such a run whose config and recipe are what the persona has since
    registered is a run of the persona: same config, same recipe, same code version."""
    return re.split(r"[@+-]", str(label), maxsplit=1)[0]


def record_key(record: dict) -> tuple:
    """(persona, seed, device type, max_iters, dreamteam version): two ok records with one key are the same run."""
    version = (record.get("versions") or {}).get("dreamteam")
    return record["persona"], int(record["seed"]), device_type(record["device"]), int(record["max_iters"]), version


def read_records(folder: str | Path, warn=None) -> list[tuple[Path, dict]]:
    """Every run record (JSON with the keys of RECORD_KEYS) under `folder`, recursively, sorted by path.

    Other JSON files (a results.json written into the folder) are ignored; unreadable ones are reported
    through `warn` (one line each) and ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"runs folder {str(folder)!r} not found (expected a folder of run records *.json)")
    found = []
    for path in sorted(folder.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            if warn:
                warn(f"warning: ignoring {path}: not readable JSON ({e})")
            continue
        if isinstance(record, dict) and all(k in record for k in RECORD_KEYS):
            if isinstance(record.get("config"), dict):  # options renamed since the record was written: current names
                record["config"] = {RENAMED_OPTIONS.get(k, k): v for k, v in record["config"].items()}
            found.append((path, record))
    return found


def completed_keys(folder: str | Path) -> dict[tuple, list[tuple[Path, dict]]]:
    """key -> the ok records (path, record) already in `folder` (an absent folder holds none)."""
    if not Path(folder).is_dir():
        return {}
    done: dict[tuple, list[tuple[Path, dict]]] = {}
    for p, r in read_records(folder):
        if r["status"] == "ok":
            done.setdefault(record_key(r), []).append((p, r))
    return done


def same_spec(a: dict, b: dict) -> bool:
    """Whether two records (or a record and `spec_fields` of a persona) hold one config and recipe. A field
    only one of them holds (a record written before the field existed) counts as the field's default, which
    is how the older code behaved: a persona that sets a new field away from its default is a new spec. An
    option of a component that neither switches on changes nothing (a persona that swapped adaptive_softmax
    out is the same model whatever adaptive_softmax_tied_tails says), and the order in which components are
    listed changes nothing either: the models assemble by slot in declaration order."""
    defaults = spec_fields(Persona("defaults", GPTConfig(), Recipe()))
    on = {key: set((x.get("config") or {}).get("components") or ()) for key, x in (("a", a), ("b", b))}

    def inert(k: str) -> bool:
        return k in OPTION_OWNERS and OPTION_OWNERS[k] not in on["a"] | on["b"]

    if on["a"] != on["b"]:
        return False
    for key in ("config", "recipe"):
        x, y, d = a.get(key) or {}, b.get(key) or {}, defaults[key]
        if any(x.get(k, d.get(k)) != y.get(k, d.get(k)) for k in x.keys() | y.keys() if k != "components" and not inert(k)):
            return False
    return True


def find_record(records: list[tuple[Path, dict]], spec: dict, seed: int, device: str, data_dir,
                max_iters: int | None = None) -> tuple[Path, dict] | None:
    """Of `records` ((path, record) pairs, as read_records gives them), the newest ok one that trained exactly
    `spec` (same_spec: the config and recipe of `spec_fields`) at `seed`, on this kind of device, from the data
    folder `data_dir`, at `max_iters` iterations (the protocol's by default) with the protocol's batch and block
    sizes, and holds a whole-validation val_loss; None where none did. Whatever label it was run under (a
    search candidate, another persona's variant), such a record is this run: the same train() on the same inputs."""
    iters = max_iters or protocol.MAX_ITERS
    found = [(path, r) for path, r in records
             if r.get("status") == "ok" and int(r["seed"]) == seed and int(r["max_iters"]) == iters
             and r.get("batch_size", protocol.BATCH_SIZE) == protocol.BATCH_SIZE
             and r.get("block_size", protocol.BLOCK_SIZE) == protocol.BLOCK_SIZE
             and device_type(r["device"]) == device_type(device) and r.get("val_loss") is not None
             and r.get("data_dir") is not None and Path(r["data_dir"]).resolve() == Path(data_dir).resolve()
             and same_spec(r, spec)]
    # a record copied into several folders (a search's confirmation copies its seed-0 runs) is one run
    return max(found, key=lambda pr: (str(pr[1].get("name", "")), str(pr[0]))) if found else None


def reuse_record(source: tuple[Path, dict], persona_label: str, out_dir: str | Path) -> Path:
    """Copy the run record `source` (find_record's answer) into out_dir as a run of `persona_label`: its name
    and persona relabelled, its start time kept, and `reused` saying which file, label and name it was
    trained as. Nothing else changes: the figures are that run's."""
    path, record = source
    stamp = str(record.get("name", "")).rsplit("_", 1)[-1]  # names end in the run's start time
    name = run_name(persona_label, int(record["seed"]), device_type(record["device"]), int(record["max_iters"]), stamp)
    relabelled = {**record, "name": name, "persona": persona_label,
                  "reused": {"file": str(path), "name": record.get("name"), "persona": record.get("persona")}}
    return write_json_atomic(Path(out_dir) / f"{name}.json", relabelled)


def spec_fields(persona) -> dict:
    """The config and recipe of `persona` (a registry name or Persona) as a record holds them."""
    spec = registry.get(persona) if isinstance(persona, str) else persona
    return {"config": as_json(spec.model), "recipe": as_json(spec.recipe)}


def plan_personas(names, ablate: str | None = None, log=print) -> list:
    """The personas to run, in order: each name of `names` (checked against the registry), then for
    `ablate` the persona itself (when not listed) and one variant per component with that component removed.
    Entries are registry names (str) or Persona objects (the ablation variants, labelled like 'x-rope')."""
    plan = []
    for name in names:
        # a registered name, or an ablation label ('x-component'); UnknownPersonaError names the known ones
        spec = registry.from_label(name)
        entry = name if name in registry.PERSONAS else spec
        if name not in map(persona_name, plan):
            plan.append(entry)
    if ablate is not None:
        persona = registry.get(ablate)
        if not persona.model.components:
            log(f"persona {ablate!r} has no components: nothing to ablate")
        else:
            if ablate not in plan:  # an ablation is read against the whole persona
                plan.append(ablate)
            planned = set(map(persona_name, plan))
            plan += [v for v in (registry.build(ablate, remove=(c,)) for c in persona.model.components)
                     if v.name not in planned]
    return plan


def persona_name(persona) -> str:
    return persona if isinstance(persona, str) else persona.name


def resolve_device(device: str) -> str:
    """The device train() will run on: 'auto' is the protocol's 'mps' with its fallback (CUDA, then the CPU)."""
    import torch

    import train_mps

    from dreamteam.arguments import DeviceError, check_device

    requested = protocol.DEVICE if device == "auto" else device
    try:
        check_device(requested)  # what every command checks: a device that is here ('mps' falls back below)
        resolved = train_mps.resolve_device(requested)
        torch.device(resolved)
    except (RuntimeError, DeviceError) as e:
        raise BenchError(f"--device {device!r}: {e}") from None
    return resolved


def sweep(personas, seeds, device: str = "auto", out_dir: str | Path = "runs", max_iters: int | None = None,
          ablate: str | None = None, data_dir=None, progress: bool = True, log=print,
          settings: dict | None = None, threads: int | None = None, executor: str = "local", workers: int | None = None,
          ray_address: str | None = None, environ: dict | None = None, reuse=()) -> SweepResult:
    """Train every (persona, seed) not already done in `out_dir` through train_mps.train(); see the module doc.

    The runs go through dreamteam.tools.executors, as evolve's evaluations do: one after the other in this process
    (local, one worker: the default), on a local pool of `workers` processes, or on Ray. A run that raises an
    Exception is recorded as failed by train() itself; the sweep says so in one line and goes on.
    KeyboardInterrupt stops the sweep; missing or corrupt data (DataError) stops it too, since every run would
    fail the same way. `environ` (the command line's os.environ) finds the data folder for a pool or Ray.
    `reuse`: folders of run records (a search's folder, another bench's): a run not done in out_dir that one
    of them holds (find_record: the same config, recipe, seed, device kind, data and length) is copied into
    out_dir under this persona's label (reuse_record), not trained again.
    """
    from dreamteam import data
    from dreamteam.tools import executors

    if max_iters is not None and max_iters < 1:
        raise BenchError(f"--max-iters {max_iters}: expected a positive number of iterations")
    if threads is not None and threads < 1:
        raise BenchError(f"--threads {threads}: expected at least 1")
    seeds = list(dict.fromkeys(int(s) for s in seeds))  # a seed given twice runs once
    if not seeds:
        raise BenchError("no seeds given: expected --seeds S [S ...]")
    plan = [with_settings(p, settings or {}) for p in plan_personas(personas, ablate, log)]
    resolved = resolve_device(device)
    iters = protocol.MAX_ITERS if max_iters is None else int(max_iters)
    version = dreamteam.__version__
    done = completed_keys(out_dir)
    # read once for the whole sweep; a --reuse-records folder that does not exist is one clear error
    reusable = [pr for folder in reuse for pr in read_records(folder)]
    reuse_data = data.find_data_dir(data_dir, environ) if reuse else None

    result = SweepResult()
    jobs = [(p, s) for s in seeds for p in plan]
    todo = []
    log(f"bench: {len(plan)} persona(s) x {len(seeds)} seed(s) on {resolved}, {iters} iterations, into {out_dir}")
    for i, (persona, seed) in enumerate(jobs, 1):
        name = persona_name(persona)
        head = f"[{i}/{len(jobs)}] {name} seed {seed}"
        rest = (seed, device_type(resolved), iters, version)
        existing = done.get((name, *rest), [])
        # a run of the same spec under another label of the persona (a `--set` run of the registered recipe)
        relabelled = [run for key, found in done.items() if key[1:] == rest and key[0] != name
                      and base_label(key[0]) == base_label(name) for run in found]
        now = spec_fields(persona)
        matching = [p for p, r in existing if same_spec(r, now)] or [p for p, r in relabelled if same_spec(r, now)]
        if matching:
            log(f"{head}: done already ({matching[-1].name}), skipped")
            result.skipped.append((name, seed))
            continue
        source = reusable and find_record(reusable, now, seed, resolved, reuse_data, iters)
        if source:
            copied = reuse_record(source, name, out_dir)
            log(f"{head}: reused {source[0]} (trained as {source[1].get('persona')}: the same config, recipe, seed, "
                f"device kind and data), written as {copied.name}")
            result.reused.append((name, seed))
            continue
        changed = " (its config or recipe changed since " + existing[-1][0].name + ")" if existing else ""
        todo.append((head, name, persona, seed, changed))

    serial = executor == "local" and (workers or 1) <= 1
    job = {"device": None if device == "auto" else device,  # 'auto' leaves the device to train(): the protocol's own
           "max_iters": max_iters, "data_dir": data_dir, "out_dir": out_dir, "progress": progress, "threads": threads}
    if not serial and todo:
        # a pool's processes and Ray's workers get absolute paths (their working folder may be another), the data
        # found (and the shipped text prepared) once here, no progress bars (they would interleave), and on a
        # local pool their share of the cores
        job.update(data_dir=str(data.find_data_dir(data_dir, environ).resolve()), out_dir=str(Path(out_dir).resolve()),
                   progress=False)
        if executor == "local" and threads is None and not (environ or {}).get("OMP_NUM_THREADS"):
            job["threads"] = max(1, (os.cpu_count() or 1) // workers)

    def started(i):
        head, _, _, _, changed = todo[i]
        where = "" if serial else f" (queued: {executor}" + (f", {workers} at once)" if executor == "local" else ")")
        log(f"{head}: training on {resolved}, {iters} iterations{changed}{where}")

    def finished(i, error):
        head, name, _, seed, _ = todo[i]
        if error is None:
            result.ran.append((name, seed))
            if not serial:
                log(f"{head}: done")
        else:
            log(f"{head}: FAILED ({error}); its record says status 'failed'; continuing")
            result.failed.append((name, seed, error))

    executors.run(run_one, [dict(job, persona=persona, seed=seed) for _, _, persona, seed, _ in todo],
                  executor=executor, workers=workers, ray_address=ray_address, on_start=started, on_done=finished)
    reused = f", {len(result.reused)} reused" if reuse else ""
    log(f"bench: {len(result.ran)} trained, {len(result.skipped)} skipped (done already){reused}, {len(result.failed)} failed")
    return result


def run_one(persona, seed, device, max_iters, data_dir, out_dir, progress, threads=None) -> str | None:
    """One (persona, seed) run through train_mps.train: None when it trained, else its error in one line.

    DataError propagates (every run would fail the same way); any other Exception is one failed run, whose
    record train() has written."""
    import train_mps
    from dreamteam.data import DataError

    try:
        # threads: --threads, or a local pool's share of the cores
        train_mps.train(persona, seed, data_dir, device, max_iters, out_dir, progress,
                        **({"threads": threads} if threads is not None else {}))
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any crash is one failed run; the sweep goes on
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None


def _terminated(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")


def main(args) -> int:
    """`dreamteam bench`: run the sweep; 0 when every run is done, 1 when some failed, 2 on bad input."""
    from dreamteam.data import DataError
    from dreamteam.tools.executors import ExecutorError

    # a terminated sweep (kill, a scheduler's timeout) unwinds like an exception: the current run's record
    # is written as failed by train(), and the sweep stops
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        result = sweep(args.personas, args.seeds, args.device, args.out, args.max_iters, args.ablate,
                       args.data_dir, progress=not args.no_progress, settings=parse_settings(args.set),
                       threads=getattr(args, "threads", None), executor=getattr(args, "executor", "local"),
                       workers=getattr(args, "workers", None), ray_address=getattr(args, "ray_address", None),
                       environ=os.environ, reuse=getattr(args, "reuse_records", ()))
    except (registry.UnknownPersonaError, BenchError, DataError, ExecutorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 1 if result.failed else 0
