"""dreamteam evolve: genomes (mutation, crossover), populations, persona proposals, persistence and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dreamteam import config, evolve, registry
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
    cmd = [sys.executable, "-m", "dreamteam.cli", "evolve", "--generations", "2", "--population", "4", "--out", str(out),
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
