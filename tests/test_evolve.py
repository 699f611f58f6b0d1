"""dreamteam evolve: genomes (mutation, crossover), populations, persona proposals, persistence and resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dreamteam import config, registry
from dreamteam.tools import evolve
from loop_helpers import ORIGINAL, ROOT, VOCAB, small_data

OPTS = {"vocab_size": VOCAB}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return small_data(tmp_path_factory.mktemp("data"))


def test_mutation_makes_one_valid_change():
    base = evolve.genome_of(registry.BASELINE)
    rng = np.random.default_rng(0)
    comps = evolve.known_components()
    kinds = set()
    for _ in range(60):
        child, how = evolve.mutate(base, rng, comps)
        evolve.validate(child, {})
        switched = set(child["components"]) ^ set(base["components"])
        changed = {k for k in base["recipe"] if child["recipe"][k] != base["recipe"][k]}
        assert len(switched) == 1 or (not switched and changed), how
        kinds.add("component" if switched else "recipe")
    assert kinds == {"component", "recipe"}


def test_components_are_read_from_the_config_when_the_run_starts(monkeypatch):
    monkeypatch.setattr(config, "KNOWN_COMPONENTS", ("rope",))
    assert evolve.known_components() == ("rope",)
    rng = np.random.default_rng(1)
    for _ in range(30):
        child, _ = evolve.mutate(evolve.genome_of(registry.BASELINE), rng, evolve.known_components())
        assert set(child["components"]) <= {"rope"}


def test_crossover_takes_every_gene_from_a_parent():
    a = {"components": ["rope", "mla"], "recipe": evolve.genome_of(registry.BASELINE)["recipe"]}
    b = {"components": ["rms_qknorm"], "recipe": evolve.genome_of(registry.LEONARDO)["recipe"]}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        c = evolve.crossover(a, b, rng)
        assert set(c["components"]) <= {"rope", "mla", "rms_qknorm"}
        assert all(c["recipe"][k] in (a["recipe"][k], b["recipe"][k]) for k in evolve.RECIPE_KEYS)
        seen.add(tuple(c["components"]))
    assert len(seen) > 3


def test_generation_zero_is_the_baseline_the_personas_and_mutants(tmp_path):
    cfg = {"rng_seed": 0, "components": list(evolve.known_components()), "model_options": OPTS, "persona_prompts": [], "llm_command": None}
    entries = evolve.make_population(tmp_path, 0, 4, cfg)
    assert [e["id"] for e in entries] == ["cand_00", "cand_01", "cand_02", "cand_03"]
    g0 = json.loads((tmp_path / "gen_000" / "cand_00" / "genome.json").read_text())
    assert g0["components"] == [] and g0["recipe"] == evolve.genome_of(registry.BASELINE)["recipe"] and g0["model"] == OPTS
    # then the registered personas (those valid under the test's model options), in name order
    origin = entries[1]["origin"]
    assert origin.startswith("the registered persona ") and origin.split()[-1] in set(registry.PERSONAS) - {"baseline"}
    genomes = [json.loads((tmp_path / "gen_000" / e["id"] / "genome.json").read_text()) for e in entries]
    assert len({json.dumps([g["components"], g["recipe"]]) for g in genomes}) == 4  # no duplicates
    assert evolve.make_population(tmp_path, 0, 4, cfg) == entries  # read back, not redrawn


def test_persona_proposals_enter_the_population(tmp_path, data_dir):
    # a fake LLM that answers with the original-style candidate (small vocabulary for the test)
    train = (ORIGINAL / "train_mps.py").read_text().replace("GPTConfig(n_layer=", f"GPTConfig(vocab_size={VOCAB}, n_layer=")
    answer = tmp_path / "answer.md"
    answer.write_text(f"```python train_mps.py\n{train}```\n```python model.py\n{(ORIGINAL / 'model.py').read_text()}```\n")
    prompts = tmp_path / "personas"
    prompts.mkdir()
    (prompts / "ada_lovelace.md").write_text("You are Ada Lovelace.")
    (prompts / "a_broken.md").write_text("You answer badly.")  # asked first
    llm = tmp_path / "llm.py"  # answers Ada with the candidate, anyone else with a block that does not compile
    llm.write_text(f"import sys\nprompt = sys.stdin.read()\nif 'Lovelace' in prompt:\n    print(open({str(answer)!r}).read())\n"
                   "else:\n    print('```python model.py\\nclass (:\\n```')\n")
    cmd = f"{sys.executable} {llm}"
    table = evolve.evolve(tmp_path / "run", 1, 2, llm_command=cmd, persona_prompts=prompts, data_dir=data_dir, max_iters=20,
                          val_windows=4, model_options=OPTS, log=lambda *_: None)
    entries = json.loads((tmp_path / "run" / "gen_000" / "population.json").read_text())
    kinds = [e["kind"] for e in entries]
    assert kinds == ["genome", "code"]  # the baseline, then Ada's proposal: the broken answer was rejected
    code = tmp_path / "run" / "gen_000" / entries[1]["id"]
    m = json.loads((code / "metrics.json").read_text())
    assert m["status"] == "ok" and m["valid"] and m["n_params"] != json.loads((tmp_path / "run" / "gen_000" / "cand_00" / "metrics.json").read_text())["n_params"]
    rejected = json.loads((tmp_path / "run" / "gen_000" / "rejected_a_broken" / "proposal.json").read_text())
    assert rejected["status"] == "rejected" and "model.py line 1" in rejected["message"]
    assert "ada_lovelace" in table.read_text()


@pytest.mark.slow
def test_two_generations_resume_after_a_kill(tmp_path, data_dir):
    """2 generations of 4 on the CPU, 20 iterations each; killed during generation 0, resumed, table written."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dreamteam", "evolve", "--generations", "2", "--population", "4", "--out", str(out),
           "--data-dir", str(data_dir), "--max-iters", "20", "--val-windows", "4", "--model-option", f"vocab_size={VOCAB}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = out / "gen_000" / "cand_00" / "metrics.json"
    deadline = time.time() + 240
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (out / "gen_000" / "summary.json").exists()
    mtime = first.stat().st_mtime_ns
    time.sleep(2)  # the killed run's evaluation process notices its parent is gone and exits
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming the run" in r.stdout
    assert first.stat().st_mtime_ns == mtime  # evaluated before the kill, not again
    table = (out / "generations.md").read_text()
    assert "## gen_000" in table and "## gen_001" in table
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert len(rows) == 8 and all("| ok |" in ln for ln in rows)
    assert "elite: gen_000/" in table
    for g in ("gen_000", "gen_001"):
        for e in json.loads((out / g / "population.json").read_text()):
            m = json.loads((out / g / e["id"] / "metrics.json").read_text())
            assert m["valid"] and m["check"]["static"] == [] and m["check"]["dynamic"] == []
    base = json.loads((out / "gen_000" / "cand_00" / "metrics.json").read_text())
    assert base["seeds"] == [0] and base["fitness"] == pytest.approx(base["best_vloss"] + 0.01 * base["elapsed_min"])
    # a different experiment in the same folder is refused
    r = subprocess.run(cmd[:-2] + ["--model-option", "vocab_size=512"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "other settings" in r.stderr


# ---- genomes that carry the whole recipe and their model options; ranking; confirmation; the launcher ----

from dreamteam.tools import harness_runner  # noqa: E402

PERSONAS = sorted(registry.PERSONAS)


def _runner_persona(genome: dict):
    """The Persona the harness's subprocess builds from a genome.json (a JSON round trip on the way)."""
    return harness_runner._persona({"genome": json.loads(json.dumps(genome))})


@pytest.mark.parametrize("name", PERSONAS)
def test_a_persona_genome_trains_exactly_the_registered_persona(name):
    p = registry.PERSONAS[name]
    g = evolve.genome_of(p)
    built = _runner_persona(g)
    assert built.model == p.model and built.recipe == p.recipe
    assert evolve.persona_of(json.loads(json.dumps(g))).model == p.model
    again = evolve.genome_of(built)
    assert {k: again[k] for k in ("components", "recipe", "model")} == {k: g[k] for k in ("components", "recipe", "model")}


def test_persona_options_and_tuples_survive_the_genome():
    # leonardo's QK gain and ada's tied tails are options, not components: a genome without them trains another model
    assert evolve.genome_of(registry.LEONARDO)["model"] == {"rms_qknorm_qk_gain": 1.86}
    assert evolve.genome_of(registry.ALAN_TURING)["recipe"]["muon_lr"] == 0.02
    p = config.Persona("ssm", config.GPTConfig(components=("difference_ssm", "adaptive_softmax"), difference_ssm_layers=(1, 3),
                                               adaptive_softmax_cutoffs=(100, 200)))
    g = json.loads(json.dumps(evolve.genome_of(p)))
    assert g["model"]["difference_ssm_layers"] == [1, 3]  # a list in JSON: the runner must make it a tuple again
    assert _runner_persona(g).model == p.model


def test_generation_zero_genomes_are_the_registered_personas_then_crosses(tmp_path):
    cfg = {"rng_seed": 0, "components": list(evolve.known_components()), "model_options": {}, "persona_prompts": [],
           "llm_command": None, "baseline": False}
    entries = evolve.make_population(tmp_path, 0, 8, cfg)
    names = sorted(n for n in registry.PERSONAS if n != "baseline")
    n_personas = len(names)  # every registered persona, the search's champion dream_team included
    assert [e["origin"] for e in entries[:n_personas]] == [f"the registered persona {n}" for n in names]
    for e, n in zip(entries[:n_personas], names):
        built = _runner_persona(json.loads((tmp_path / "gen_000" / e["id"] / "genome.json").read_text()))
        assert built.model == registry.PERSONAS[n].model and built.recipe == registry.PERSONAS[n].recipe
    keys = set()
    for e in entries[n_personas:]:
        assert e["origin"].startswith("cross of the personas ")
        a, b = e["origin"].split("personas ")[1].split(" and ")
        g = json.loads((tmp_path / "gen_000" / e["id"] / "genome.json").read_text())
        pa, pb = registry.PERSONAS[a], registry.PERSONAS[b]
        assert set(g["components"]) <= set(pa.model.components) | set(pb.model.components)
        for k, v in g["recipe"].items():
            assert v in (getattr(pa.recipe, k), getattr(pb.recipe, k)), k
        evolve.validate(g, {})
        keys.add(evolve.genome_key(g))
    assert len(keys) == 8 - n_personas
    # with the baseline (the default): it comes first, then the personas
    cfg["baseline"] = True
    with_base = evolve.make_population(tmp_path / "b", 0, 8, cfg)
    assert with_base[0]["origin"].startswith("the registry baseline") and len(with_base) == 8


def test_crossover_keeps_a_components_settings_with_it():
    leo, turing = evolve.genome_of(registry.LEONARDO), evolve.genome_of(registry.ALAN_TURING)
    leo["recipe"]["muon_lr"] = 0.05  # leonardo has no muon: its muon_lr must never reach a child with turing's muon
    rng = np.random.default_rng(0)
    seen = {"rms": 0, "muon": 0}
    for _ in range(200):
        c = evolve.crossover(leo, turing, rng)
        if "rms_qknorm" in c["components"]:
            assert c["model"]["rms_qknorm_qk_gain"] == 1.86
            seen["rms"] += 1
        else:
            assert "rms_qknorm_qk_gain" not in c["model"]
        if "muon" in c["components"]:
            assert c["recipe"]["muon_lr"] == 0.02 and c["recipe"]["muon_weight_decay"] == 0.01
            seen["muon"] += 1
        if "good_turing_prior" in c["components"]:
            assert c["recipe"]["good_turing_prior_lr_ratio"] == 0.1
    assert seen["rms"] > 50 and seen["muon"] > 50


def test_mutations_move_the_settings_that_matter_within_their_ranges():
    comps = evolve.known_components()
    rng = np.random.default_rng(3)
    laplace, turing = evolve.genome_of(registry.LAPLACE), evolve.genome_of(registry.ALAN_TURING)
    moved = set()
    for parent in (laplace, turing, evolve.genome_of(registry.BASELINE)):
        for _ in range(150):
            child, how = evolve.mutate(parent, rng, comps)
            r, pr = child["recipe"], parent["recipe"]
            changed = {k for k in r if r[k] != pr[k]} | {k for k in set(child["model"]) | set(parent["model"])
                                                         if child["model"].get(k) != parent["model"].get(k)}
            switched = set(child["components"]) ^ set(parent["components"])
            assert (len(switched) == 1 and not changed) or (not switched and changed), how
            assert evolve.LR_RANGE[0] <= r["learning_rate"] <= evolve.LR_RANGE[1]
            assert evolve.MUON_LR_RANGE[0] <= r["muon_lr"] <= evolve.MUON_LR_RANGE[1]
            if "muon_lr" in changed:
                assert "muon" in parent["components"]
            if "posterior_mean_decay" in changed:
                assert "posterior_mean" in parent["components"]
                assert child["model"]["posterior_mean_decay"] in evolve.CHOICES["posterior_mean_decay"]
            if r["schedule"] == "constant":
                assert r["min_lr"] == r["learning_rate"]
            else:
                assert r["min_lr"] <= r["learning_rate"]
            moved |= changed
    assert {"learning_rate", "muon_lr", "posterior_mean_decay", "weight_decay", "warmup_iters", "min_lr", "schedule"} <= moved


def test_old_genome_files_still_load_and_breed():
    old = {"name": "g1-cand_03", "components": ["rope"], "model": {"vocab_size": VOCAB},
           "recipe": {"learning_rate": 0.002, "schedule": "cosine", "warmup_iters": 100, "min_lr": 0.0002, "weight_decay": 0.01,
                      "beta2": 0.95, "grad_clip": 1.0}}
    p = _runner_persona(old)
    assert p.recipe == config.Recipe(learning_rate=0.002, schedule="cosine", warmup_iters=100, min_lr=0.0002, weight_decay=0.01)
    assert evolve.persona_of(old).model == p.model
    g = evolve.normalized(old)
    assert g["recipe"]["muon_lr"] == config.Recipe().muon_lr and g["model"] == {"vocab_size": VOCAB}
    rng = np.random.default_rng(0)
    child = evolve.crossover(old, evolve.genome_of(registry.LEONARDO), rng)
    evolve.validate(child, OPTS)
    evolve.validate(evolve.mutate(old, rng, evolve.known_components())[0], OPTS)


def test_duplicates_ignore_settings_of_components_switched_off():
    base = evolve.genome_of(registry.BASELINE)
    other = json.loads(json.dumps(base))
    other["recipe"]["muon_lr"] = 0.05
    other["model"]["posterior_mean_decay"] = 0.99
    assert evolve.genome_key(base) == evolve.genome_key(other)
    other["components"] = ["muon"]
    base["components"] = ["muon"]
    assert evolve.genome_key(base) != evolve.genome_key(other)
    # a mutation to a constant schedule and one back to cosine give the persona again (0.1 * 3e-3 rounds to 3e-4)
    babbage = evolve.genome_of(registry.BABBAGE)
    rng = np.random.default_rng(0)
    const = next(c for c, how in (evolve.mutate(babbage, rng, ()) for _ in range(200)) if how == "schedule=constant")
    assert const["recipe"]["min_lr"] == const["recipe"]["learning_rate"] and "min_lr" not in evolve.label(const)
    back = next(c for c, how in (evolve.mutate(const, rng, ()) for _ in range(200)) if how == "schedule=cosine")
    assert evolve.genome_key(back) == evolve.genome_key(babbage)
    # exact attention by key blocks computes what attention does: adding it to a persona is no new experiment
    turing = evolve.genome_of(registry.ALAN_TURING)
    assert evolve.genome_key(dict(turing, components=turing["components"] + ["tiled_attention"])) == evolve.genome_key(turing)


def _fake_candidate(gdir, cid, genome, *, val_loss, fitness, status="ok", valid=True):
    d = gdir / cid
    d.mkdir(parents=True)
    (d / "genome.json").write_text(json.dumps(genome))
    m = {"status": status, "valid": valid, "val_loss": val_loss, "fitness": fitness, "best_vloss": fitness - 0.1,
         "elapsed_min": 10.0, "reason": None if status == "ok" else "crash: x", "n_params": 1}
    (d / "metrics.json").write_text(json.dumps(m))
    return {"id": cid, "kind": "genome", "origin": "test", "label": evolve.label(genome)}


def _fake_generation(out):
    """gen_000 of four genomes: A best by fitness, B best by val_loss, C invalid, D failed."""
    gdir = out / "gen_000"
    base = evolve.genome_of(registry.BASELINE)
    gs = {n: dict(base, name=n, recipe=dict(base["recipe"], learning_rate=lr)) for n, lr in
          (("A", 1e-3), ("B", 2e-3), ("C", 3e-3), ("D", 4e-3))}
    entries = [_fake_candidate(gdir, "cand_00", gs["D"], val_loss=None, fitness=math.inf, status="failed"),
               _fake_candidate(gdir, "cand_01", gs["C"], val_loss=4.0, fitness=4.0, valid=False),
               _fake_candidate(gdir, "cand_02", gs["A"], val_loss=4.8, fitness=4.5),
               _fake_candidate(gdir, "cand_03", gs["B"], val_loss=4.7, fitness=4.6)]
    (gdir / "population.json").write_text(json.dumps(entries))
    (gdir / "summary.json").write_text("{}")
    return gs


def _rows(table: str, gen: str) -> list[str]:
    part = table.split(f"## {gen}\n")[1].split("\n## ")[0]
    return [ln.split(" | ")[1] for ln in part.splitlines() if ln.startswith("| ") and ln[2].isdigit()]


@pytest.mark.parametrize("rank_by,order,elite", [("val_loss", ["cand_03", "cand_02", "cand_01", "cand_00"], "B"),
                                                 ("fitness", ["cand_02", "cand_03", "cand_01", "cand_00"], "A")])
def test_ranking_by_val_loss_or_fitness_picks_the_elite_and_orders_the_table(tmp_path, rank_by, order, elite):
    _fake_generation(tmp_path)
    ms = {e["id"]: json.loads((tmp_path / "gen_000" / e["id"] / "metrics.json").read_text())
          for e in json.loads((tmp_path / "gen_000" / "population.json").read_text())}
    assert sorted(ms, key=lambda k: evolve.rank_key(ms[k], rank_by)) == order
    (tmp_path / "evolve.json").write_text(json.dumps({"config": {"rank_by": rank_by, "seeds": [0]}}))
    assert _rows(evolve.write_table(tmp_path).read_text(), "gen_000") == order
    cfg = {"rng_seed": 0, "components": ["rope", "muon"], "model_options": {}, "persona_prompts": [], "llm_command": None,
           "rank_by": rank_by, "parents": 2}
    entries = evolve.make_population(tmp_path, 1, 4, cfg)
    assert entries[0]["carried"] == f"gen_000/{order[0]}"
    assert json.loads((tmp_path / "gen_001" / "cand_00" / "genome.json").read_text())["name"] == elite
    # children come from the two best valid genomes only: never from the invalid C or the failed D
    for e in entries[1:]:
        parents = set(e["origin"].replace(",", " ").split()) & {"A", "B", "C", "D"}
        assert parents and parents <= {"A", "B"}, e["origin"]


def test_a_resumed_run_keeps_its_settings_and_its_commit(tmp_path, data_dir, monkeypatch):
    out = tmp_path / "run"
    _fake_generation(out)
    kw = dict(data_dir=data_dir, model_options=OPTS, log=lambda *_: None)
    # a run folder written before the ranking was an option ranked by fitness: it resumes only as such
    legacy = {"seeds": [0], "device": "cpu", "data_dir": str(data_dir.resolve()), "max_iters": None, "val_windows": None,
              "model_options": OPTS, "rng_seed": 0, "population": 4, "components": list(evolve.known_components())}
    (out / "evolve.json").write_text(json.dumps({"config": legacy, "generations": 1}))
    with pytest.raises(evolve.EvolveError, match="other settings.*rank_by"):
        evolve.evolve(out, 1, 4, **kw)
    evolve.evolve(out, 1, 4, rank_by="fitness", parents=2, **kw)
    assert json.loads((out / "evolve.json").read_text())["config"]["rank_by"] == "fitness"
    # a run records its commit; resuming it from other code is refused unless asked for
    out2 = tmp_path / "run2"
    _fake_generation(out2)
    monkeypatch.setattr(evolve.runs, "git_commit", lambda: "a" * 40)
    evolve.evolve(out2, 1, 4, command=["dreamteam", "evolve"], **kw)
    rec = json.loads((out2 / "evolve.json").read_text())["record"]
    assert rec["git_commit"] == "a" * 40 and rec["command"] == ["dreamteam", "evolve"] and rec["processor"]
    monkeypatch.setattr(evolve.runs, "git_commit", lambda: "b" * 40)
    with pytest.raises(evolve.EvolveError, match="started at commit a+; this code is at b+"):
        evolve.evolve(out2, 1, 4, **kw)
    evolve.evolve(out2, 1, 4, allow_other_commit=True, **kw)
    state = json.loads((out2 / "evolve.json").read_text())
    assert state["record"]["git_commit"] == "a" * 40 and state["resumes"][-1]["git_commit"] == "b" * 40


def test_bad_options_are_one_error_line(tmp_path, data_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "dreamteam", "evolve", "--out", str(tmp_path / "x")]
    for extra, msg in ((["--table-only"], "holds no evolve run"), ([], "--generations and --population are needed"),
                       (["--generations", "1", "--population", "2", "--parents", "0", "--data-dir", str(data_dir)],
                        "--parents: 0: expected a whole number of at least 1")):
        r = subprocess.run(base + extra, cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and msg in r.stderr, r.stderr


@pytest.mark.slow
def test_a_tiny_search_end_to_end_with_confirmation_plot_and_doc(tmp_path, data_dir):
    """2 generations of 5 (the personas valid at a 256-id vocabulary and a cross), 10 iterations each, ranked by
    val_loss; the best 2 confirmed at seeds 0 and 1; then the table, the plot and the doc from the folder."""
    out = tmp_path / "run"
    evolve.evolve(out, 2, 5, data_dir=data_dir, max_iters=10, val_windows=4, model_options=OPTS, baseline=False,
                  confirm_k=2, confirm_seeds=(0, 1), workers=1, log=lambda *_: None)
    gen0 = json.loads((out / "gen_000" / "population.json").read_text())
    assert sum(e["origin"].startswith("the registered persona ") for e in gen0) == 4  # ada's cutoffs exceed 256 ids
    assert gen0[-1]["origin"].startswith("cross of the personas ")
    allm = {}
    for g in ("gen_000", "gen_001"):
        for e in json.loads((out / g / "population.json").read_text()):
            d = out / g / e["id"]
            m = json.loads((d / "metrics.json").read_text())
            assert m["status"] == "ok" and m["valid"] and m["val_loss"] is not None, m.get("reason")
            run = json.loads((d / "run_s0.json").read_text())  # train()'s record kept beside the metrics
            assert run["status"] == "ok" and run["max_iters"] == 10 and run["best_vloss"] == pytest.approx(m["best_vloss"])
            allm[f"{g}/{e['id']}"] = m["val_loss"]
        s = json.loads((out / g / "summary.json").read_text())
        assert s["rank_by"] == "val_loss" and s["best_val_loss"] == min(s["val_loss"].values())
    assert json.loads((out / "gen_001" / "population.json").read_text())[0]["carried"] == min(
        (k for k in allm if k.startswith("gen_000")), key=allm.get)
    c = json.loads((out / "confirm" / "summary.json").read_text())
    assert [r["val_loss"] for r in c["ranked"]] == sorted(r["val_loss"] for r in c["ranked"]) and len(c["ranked"]) == 2
    for r in c["ranked"]:
        d = out / "confirm" / r["id"]
        seed0 = json.loads((out / r["from"] / "metrics_s0.json").read_text())
        assert json.loads((d / "metrics_s0.json").read_text())["wall_s"] == seed0["wall_s"]  # seed 0 reused, not rerun
        assert r["val_loss"] == pytest.approx(np.mean(r["val_loss_per_seed"])) and r["val_loss_std"] is not None
    doc = tmp_path / "evolve.md"
    doc.write_text("# Search\n\nbefore\n<!-- evolve-table:begin (generated) -->\nold\n<!-- evolve-table:end -->\nafter\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "dreamteam", "evolve", "--out", str(out), "--table-only",
                        "--plot", str(tmp_path / "best.png"), "--doc", str(doc)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "best.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()
    assert text.startswith("# Search\n\nbefore\n") and text.endswith("<!-- evolve-table:end -->\nafter\n") and "\nold\n" not in text
    assert "### Confirmation at seeds 0, 1" in text and "10 iterations (NOT the protocol)" in text
    best = min(allm.values())
    assert f"| {best:.4f} |" in text.split("#### Best per generation")[1].split("#### gen_000")[0]


@pytest.mark.slow
def test_the_launcher_runs_a_fixed_commit_and_commits_only_its_folder(tmp_path, data_dir):
    """benchmarks/run_search.sh on a clone of this repository: a worktree of the commit, a tiny search, its folder
    committed while a developer's staged edit stays staged and out of the commit."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nan edit in progress\n")
    subprocess.run(git + ["add", "README.md"], check=True)
    env = dict(os.environ, DREAMTEAM_SEARCH_WORKTREES=str(tmp_path / "wts"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    (tmp_path / "wts").mkdir()
    cmd = [str(repo / "benchmarks" / "run_search.sh"), head, "--name", "tiny", "--generations", "1", "--population", "2",
           "--workers", "1", "--confirm", "1", "--", "--max-iters", "5", "--val-windows", "2", "--data-dir", str(data_dir),
           "--model-option", f"vocab_size={VOCAB}", "--confirm-seeds", "0"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    wt = tmp_path / "wts" / f"dreamteam-search-{head}"
    assert subprocess.run(["git", "-C", str(wt), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() == head
    state = json.loads((repo / "results" / "evolve" / "tiny" / "evolve.json").read_text())
    assert state["record"]["git_commit"] == head and state["config"]["rank_by"] == "val_loss"
    assert state["record"]["omp_num_threads"] == "1" and state["record"]["command"][:3] == ["dreamteam", "evolve", "--out"]
    files = subprocess.run(git + ["show", "--name-only", "--format=%s", "HEAD"], capture_output=True, text=True).stdout.split()
    assert f"tiny at {head[:12]}: finished" in " ".join(files[:8])
    committed = [f for f in files if f.startswith("results/")]
    assert "results/evolve/tiny/gen_000/cand_00/metrics.json" in committed and "results/evolve/tiny/evolve.json" in committed
    assert not [f for f in committed if ".harness" in f or f.endswith(".safetensors")]
    assert "README.md" not in files
    staged = subprocess.run(git + ["diff", "--cached", "--name-only"], capture_output=True, text=True).stdout.split()
    assert staged == ["README.md"]


def _bench_record(folder, persona, seed, data_dir, *, val_loss, max_iters=10001, device="cpu", name=None):
    """A run record as `dreamteam bench` writes it for `persona` (spec_fields: its whole config and recipe)."""
    from dreamteam import runs
    from dreamteam.tools.bench import spec_fields

    name = name or f"{persona.name}_seed{seed}_cpu_{max_iters}it_20261201-000000"
    record = {"name": name, "persona": persona.name, "seed": seed, "device": device, "max_iters": max_iters,
              "batch_size": 8, "block_size": 64, "status": "ok", "command": "dreamteam bench", "data_dir": str(data_dir),
              "versions": {"git_commit": "abc123", "processor": "AMD EPYC"}, "n_params": 123,
              "best_vloss": val_loss - 0.7, "val_loss": val_loss, "elapsed_min": 20.0, "fitness": val_loss - 0.5,
              **spec_fields(persona)}
    return runs.write_json_atomic(folder / f"{name}.json", record)


def test_a_registry_genome_measured_by_bench_is_read_from_its_record_not_trained_again(tmp_path, monkeypatch):
    records, data_dir = tmp_path / "records", tmp_path / "data"
    records.mkdir()
    data_dir.mkdir()
    laplace = registry.get("pierre_simon_laplace")
    _bench_record(records, laplace, 0, data_dir, val_loss=4.77)
    _bench_record(records, laplace, 2, data_dir, val_loss=4.75, max_iters=300)  # a short run: not the protocol
    retuned = config.Persona(laplace.name, laplace.model, laplace.recipe.replace(weight_decay=0.1))
    _bench_record(records, retuned, 1, data_dir, val_loss=4.70)  # another recipe
    cand = tmp_path / "cand"
    cand.mkdir()
    genome = evolve.genome_of(laplace)
    (cand / "genome.json").write_text(json.dumps(genome))
    common = dict(device="cpu", data_dir=str(data_dir))
    m = evolve.reused_measurement(cand, genome, 0, [records], **common)
    assert m["status"] == "ok" and m["valid"] and m["val_loss"] == 4.77 and m["fitness"] == pytest.approx(4.27)
    assert m["reused"]["git_commit"] == "abc123" and json.loads((cand / "run_s0.json").read_text())["val_loss"] == 4.77
    for seed, kw in ((1, {}), (2, {}), (0, dict(val_windows=4)), (0, dict(device="cuda")),
                     (0, dict(data_dir=str(tmp_path)))):
        assert evolve.reused_measurement(cand, genome, seed, [records], **{**common, **kw}) is None, (seed, kw)
    assert evolve.reused_measurement(cand, evolve.genome_of(retuned), 1, [records], **common)["val_loss"] == 4.70

    # evaluate_seeds reads seed 0 from the record and trains seed 1 only
    for f in ("metrics_s0.json", "metrics_s1.json"):  # written by the calls above
        (cand / f).unlink()
    trained = []

    def fake_evaluate(cand_dir, *, seed, metrics_name, **kwargs):
        trained.append(seed)
        out = {"dir": str(cand_dir), "status": "ok", "reason": None, "valid": True, "best_vloss": 4.1, "elapsed_min": 10.0,
               "fitness": 4.2, "val_loss": 4.81, "n_params": 123, "seed": seed, "max_iters": 10001, "protocol_run": True,
               "check": {"valid": True, "static": [], "dynamic": [], "substitutions": []}}
        (Path(cand_dir) / metrics_name).write_text(json.dumps(out))
        return out

    monkeypatch.setattr(evolve.harness, "evaluate", fake_evaluate)
    agg = evolve.evaluate_seeds(str(cand), [0, 1], reuse=[records], timeout_min=1.0, max_iters=None, val_windows=None,
                                threads=None, **common)
    assert trained == [1] and agg["reused_seeds"] == [0] and agg["val_loss"] == pytest.approx((4.77 + 4.81) / 2)
    trained.clear()
    evolve.evaluate_seeds(str(cand), [0, 1], reuse=(), timeout_min=1.0, max_iters=None, val_windows=None, threads=None,
                          **common)
    assert trained == []  # measured already: read back


def test_dream_team_is_exactly_the_confirmed_winner_of_search2():
    """The registered champion trains the genome that search2's confirmation ranked first (its committed run
    folder), config and recipe: a registry edit that drifts from the measured genome fails here."""
    folder = Path(__file__).resolve().parent.parent / "results" / "evolve" / "search2" / "confirm"
    summary = json.loads((folder / "summary.json").read_text())
    winner = summary["ranked"][0]
    assert summary["seeds"] == [0, 1, 2] and winner["status"] == "ok" and winner["valid"]
    genome = json.loads((folder / winner["id"] / "genome.json").read_text())
    built = _runner_persona(genome)
    assert built.model == registry.DREAM_TEAM.model and built.recipe == registry.DREAM_TEAM.recipe
    assert winner["val_loss"] == pytest.approx(sum(winner["val_loss_per_seed"]) / 3)
