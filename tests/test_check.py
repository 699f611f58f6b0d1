"""The protocol checker: static violations with their lines, the dynamic counts, and `dreamteam check`."""

import json
import shutil

import pytest

from dreamteam.tools import harness
from dreamteam.tools.check import Violation, dynamic_violations, expected_evaluations, static_check
from dreamteam.tools.cli import main
from loop_helpers import ROOT, VOCAB, original_candidate, project_variant, small_data


def line_of(src: str, text: str) -> int:
    (n,) = [i for i, ln in enumerate(src.splitlines(), 1) if text in ln]
    return n


def test_the_projects_own_train_mps_passes():
    assert static_check((ROOT / "train_mps.py").read_text()) == []


def test_the_original_style_fixture_passes(tmp_path):
    assert static_check(original_candidate(tmp_path / "c").joinpath("train_mps.py").read_text()) == []


CASES = {
    "frozen value": ((("n_embd = 32  # not to be changed", "n_embd = 64  # not to be changed"),),
                     "n_embd = 64", "frozen", "must be the literal 32"),
    "early stopping with break": ((("            loss = train_step(xb, yb, it)\n",
                                    "            loss = train_step(xb, yb, it)\n"
                                    "            if vloss_curve and vloss_curve[-1][1] < 5.0:\n"
                                    "                break  # early stopping\n"),),
                                  "break  # early stopping", "loop", "`break`"),
    "evaluation on training data": (((' xb, yb = get_batch("val", it)', ' xb, yb = get_batch("train", it)'),),
                                    '                    xb, yb = get_batch("train", it)', "eval", "training batch"),
    "gradient accumulation over 4 batches": ((("        loss.backward()\n        recipes.optimizer_step(model, optimizer, spec.recipe, it)\n",
                                               "        (loss / 4).backward()\n        if (it + 1) % 4 == 0:\n"
                                               "            recipes.optimizer_step(model, optimizer, spec.recipe, it)\n"),),
                                             "recipes.optimizer_step(model, optimizer, spec.recipe, it)", "loop", "conditional"),
    "changed return": ((("return float(best_vloss), float(elapsed_min)", "return float(best_vloss)"),),
                       "return float(best_vloss)", "return", "must return `best_vloss, elapsed_min`"),
    "evaluation every 200": ((("if it % eval_interval == 0:", "if it % (2 * eval_interval) == 0:"),),
                             "if it % (2 * eval_interval) == 0:", "eval", "every 100 iterations"),
    "frozen value reassigned later": ((("    device = resolve_device(requested_device)\n",
                                        "    device = resolve_device(requested_device)\n    batch_size = 16\n"),),
                                      "batch_size = 16", "frozen", "changed after line"),
    "data read as another dtype": ((("    dataset = data.load(data_dir, os.environ)  # loaded once into memory\n",
                                     "    dataset = np.memmap('train.bin', dtype=np.int32), np.memmap('val.bin', dtype=np.uint16)\n"),),
                                   "np.int32", "data", "uint16"),
}


@pytest.mark.parametrize("case", CASES)
def test_static_check_flags_the_violation_with_its_line(case):
    edits, marker, kind, words = CASES[case]
    src = project_variant(*edits)
    v = static_check(src)
    assert v, f"{case} was not flagged"
    hit = [x for x in v if x.kind == kind and words in x.message]
    assert hit, [str(x) for x in v]
    assert hit[0].line == line_of(src, marker)
    assert str(hit[0]).startswith(f"line {hit[0].line}: ")


def test_static_check_reports_a_syntax_error_and_a_missing_train():
    (v,) = static_check("def train(:\n    pass\n")
    assert v.kind == "syntax" and v.line == 1
    v = static_check("x = 1\n")
    assert any("no top-level function train()" in x.message for x in v)
    assert any("batch_size" in x.message and "never set" in x.message for x in v)


def test_expected_evaluations_of_the_protocol():
    assert expected_evaluations(10001) == 101
    assert expected_evaluations(101) == 2 and expected_evaluations(30) == 1


def counts(**kw):
    base = {"steps": 101, "evals": 2, "eval_at_step": [0, 100], "eval_sources": {"val": 2}, "bad_shapes": [],
            "step_lines": [50], "eval_lines": [40], "train_eval_line": None, "unknown_eval_line": None, "batches_seen": 103}
    base.update(kw)
    return base


def test_dynamic_rules_on_recorded_counts():
    assert dynamic_violations(counts(), 101) == []
    kinds = lambda d: {v.kind for v in dynamic_violations(d, 101)}  # noqa: E731
    assert kinds(counts(steps=26)) == {"steps"}
    assert kinds(counts(evals=1, eval_at_step=[0])) == {"evals"}
    assert kinds(counts(eval_at_step=[0, 25])) == {"evals"}
    assert kinds(counts(eval_sources={"val": 1, "train": 1}, train_eval_line=40)) == {"eval_data"}
    assert kinds(counts(eval_sources={"unknown": 2})) == {"eval_data"}
    assert kinds(counts(bad_shapes=[[[16, 64], "training", 50]])) == {"shape"}
    (v,) = dynamic_violations(counts(steps=26), 101)
    assert v == Violation("steps", 50, "train() took 26 optimizer steps; the protocol takes exactly 101")


# --- dynamic checks, running candidates that the static check cannot see through --------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return small_data(tmp_path_factory.mktemp("data"))


def evaluate(folder, data_dir, max_iters):
    return harness.evaluate(folder, data_dir=data_dir, max_iters=max_iters, val_windows=8, timeout_min=3)


def dynamic_kinds(m):
    return {v["kind"] for v in m["check"]["dynamic"]}


def test_dynamic_check_passes_the_fixture_and_counts_every_step(tmp_path, data_dir):
    m = evaluate(original_candidate(tmp_path / "c"), data_dir, 101)
    assert m["status"] == "ok" and m["valid"], m["check"]
    c = m["check"]["counts"]
    assert c["steps"] == 101 and c["evals"] == 2 and c["eval_at_step"] == [0, 100] and c["eval_sources"] == {"val": 2}


def test_both_halves_catch_a_break_hidden_in_a_helper(tmp_path, data_dir):
    # the break is taken through an exception raised in a nested function: no `break` for the static check
    cand = original_candidate(tmp_path / "c")
    src = (cand / "train_mps.py").read_text()
    a = src.index("    for iter in range(max_iters):\n")
    b = src.index("        optimizer.step()\n") + len("        optimizer.step()\n")
    loop = "".join("    " + ln for ln in src[a:b].splitlines(keepends=True))
    stop = "    def stop(i):\n        if i == 20:\n            raise StopIteration\n    try:\n"
    loop = loop.replace("optimizer.step()\n", "optimizer.step()\n            stop(iter)\n")
    (cand / "train_mps.py").write_text(src[:a] + stop + loop + "    except StopIteration:\n        pass\n" + src[b:])
    # the static check follows the helper no further than the swallowing `except` around the loop
    (sv,) = static_check((cand / "train_mps.py").read_text())
    assert sv.kind == "loop" and "swallows" in sv.message and sv.line == line_of((cand / "train_mps.py").read_text(), "except StopIteration")
    m = evaluate(cand, data_dir, 40)
    assert m["status"] == "ok" and not m["valid"]
    (v,) = m["check"]["dynamic"]
    assert v["kind"] == "steps" and "21 optimizer steps" in v["message"] and "exactly 40" in v["message"]
    src = (cand / "train_mps.py").read_text()
    assert v["line"] == line_of(src, "optimizer.step()")


def test_both_halves_catch_gradient_accumulation_in_a_helper(tmp_path, data_dir):
    cand = original_candidate(tmp_path / "c",
                              ("    best_vloss = float('inf')\n",
                               "    best_vloss = float('inf')\n    def apply(i):\n        if (i + 1) % 4 == 0:\n"
                               "            optimizer.step()\n            optimizer.zero_grad(set_to_none=True)\n"),
                              ("        optimizer.zero_grad(set_to_none=True)\n        loss.backward()\n        optimizer.step()\n",
                               "        (loss / 4).backward()\n        apply(iter)\n"))
    # the static check follows the helper defined in train(): the step it takes is conditional
    (sv,) = static_check((cand / "train_mps.py").read_text())
    assert sv.kind == "loop" and "`(iter + 1) % 4 == 0`" in sv.message
    assert sv.line == line_of((cand / "train_mps.py").read_text(), "            optimizer.step()")
    m = evaluate(cand, data_dir, 40)
    assert not m["valid"] and dynamic_kinds(m) == {"steps", "accumulation"}
    steps, acc = sorted(m["check"]["dynamic"], key=lambda v: v["kind"] != "steps")
    assert "took 10 optimizer steps" in steps["message"]
    assert "4 training forward(s) and 4 backward pass(es)" in acc["message"]


def test_dynamic_check_catches_evaluation_on_training_data(tmp_path, data_dir):
    # the split is chosen through a variable: the static check sees get_batch(split), not 'train'
    cand = original_candidate(tmp_path / "c", ("                xb, yb = get_batch('val')\n",
                                               "                which = 'tr' + 'ain'\n                xb, yb = get_batch(which)\n"))
    assert static_check((cand / "train_mps.py").read_text()) == []
    m = evaluate(cand, data_dir, 30)
    assert not m["valid"] and dynamic_kinds(m) == {"eval_data"}
    v = m["check"]["dynamic"][0]
    assert "training data" in v["message"] and v["line"] == line_of((cand / "train_mps.py").read_text(), "_, vloss = model(xb, yb)")


def test_check_command_reports_static_and_recorded_dynamic(tmp_path, data_dir, capsys):
    cand = original_candidate(tmp_path / "c", ("n_embd = 32", "n_embd = 48"))
    assert main(["check", str(cand)]) == 1
    out = capsys.readouterr().out
    assert "VIOLATED" in out and f"line {line_of((cand / 'train_mps.py').read_text(), 'n_embd = 48')}:" in out
    assert "dynamic: not run yet" in out
    good = original_candidate(tmp_path / "g")
    evaluate(good, data_dir, 30)
    assert main(["check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "protocol kept" in out and "a shortened test run" in out
    assert json.loads((good / "metrics.json").read_text())["check"]["valid"]


def test_check_command_passes_the_project(capsys):
    assert main(["check", str(ROOT)]) == 0
    assert "protocol kept" in capsys.readouterr().out


def test_dynamic_check_catches_a_doubled_batch(tmp_path, data_dir):
    # batch_size keeps its literal, but every training batch is doubled to 16 x 64 after get_batch
    cand = original_candidate(tmp_path / "c", ("        xb, yb = get_batch('train')\n",
                                               "        xb, yb = get_batch('train')\n        xb, yb = torch.cat([xb, xb]), torch.cat([yb, yb])\n"))
    assert static_check((cand / "train_mps.py").read_text()) == []
    m = evaluate(cand, data_dir, 10)
    assert not m["valid"] and dynamic_kinds(m) == {"shape"}
    v = m["check"]["dynamic"][0]
    assert "shape [16, 64]" in v["message"] and v["line"] == line_of((cand / "train_mps.py").read_text(), "_, loss = model(xb, yb)")


# --- the candidate fixtures: LLM-style rewrites of the reference baseline, each with its expected verdict ------

CANDIDATES = ROOT / "tests" / "fixtures" / "candidates"
EXPECTED = {k: v for k, v in json.loads((CANDIDATES / "expected.json").read_text()).items() if not k.startswith("_")}


def test_every_fixture_has_an_expected_verdict_and_there_are_enough():
    folders = {p.name for p in CANDIDATES.iterdir() if p.is_dir()}
    assert folders == set(EXPECTED)
    assert len(folders) >= 15
    assert sum(not e["static"] and not e.get("dynamic") for e in EXPECTED.values()) >= 5  # accepted styles
    assert (CANDIDATES / "own_model_arch" / "model.py").exists()


def matches(got, want):
    """Each expected [kind, line, words] matched by exactly one violation, and nothing else reported."""
    assert len(got) == len(want), [str(Violation(**g) if isinstance(g, dict) else g) for g in got]
    for kind, line, words in want:
        hit = [g for g in got if (g["kind"], g["line"]) == (kind, line) and words in g["message"]]
        assert hit, (kind, line, words, [str(Violation(**g)) for g in got])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_static_verdict_of_each_fixture(name):
    got = static_check((CANDIDATES / name / "train_mps.py").read_text())
    matches([vars(v) for v in got], EXPECTED[name]["static"])
    for v in got:
        assert str(v).startswith(f"line {v.line}: ") and v.line


def fixture_copy(name, folder):
    """The fixture with the small test vocabulary, so that a step costs milliseconds."""
    shutil.copytree(CANDIDATES / name, folder)
    src = (folder / "train_mps.py").read_text()
    assert src.count("vocab_size=50304") == 1
    (folder / "train_mps.py").write_text(src.replace("vocab_size=50304", f"vocab_size={VOCAB}"))
    return folder


@pytest.mark.parametrize("name", [pytest.param(k, marks=pytest.mark.slow) if v.get("slow") else k
                                  for k, v in sorted(EXPECTED.items()) if "dynamic" in v])
def test_dynamic_verdict_of_each_fixture(name, tmp_path, data_dir):
    e = EXPECTED[name]
    m = evaluate(fixture_copy(name, tmp_path / name), data_dir, e["max_iters"])
    assert m["status"] == "ok", (m["reason"], m["stderr_tail"][-2000:])
    matches(m["check"]["dynamic"], e["dynamic"])
    assert m["valid"] == (not e["static"] and not e["dynamic"])
    if not e["dynamic"]:
        c = m["check"]["counts"]
        assert c["steps"] == e["max_iters"] == c["train_forwards"] == c["backwards"]
        assert [ev["batches"] for ev in c["eval_events"]] == [1] * expected_evaluations(e["max_iters"])
    if name == "reference":
        # returned as a 0-d tensor and scored; its os.path.join(data_dir, "shakespeare/train.bin") points at the data folder
        assert m["return_repr"].startswith("(tensor(") and m["fitness"] < float("inf")
        subs = [n for n in m["check"]["substitutions"] if n["what"] == "data"]
        assert [(n["line"], n["to"]) for n in subs] == [(20, repr(str(data_dir / "train.bin"))), (21, repr(str(data_dir / "val.bin")))]


@pytest.mark.slow
def test_acceptance_reference_on_the_benchmark_data(tmp_path, capsys, shared_data):
    # no edit: the fixture as written, its own vocabulary of 50304, the real data folder (skipped without it)
    cand = shutil.copytree(CANDIDATES / "reference", tmp_path / "reference")
    assert main(["evaluate", str(cand), "--data-dir", str(shared_data), "--max-iters", "101", "--val-windows", "8"]) == 0
    assert main(["check", str(cand)]) == 0
    out = capsys.readouterr().out
    assert "protocol kept" in out and "status" not in out.split("protocol kept")[1]


def test_a_failed_run_is_judged_on_what_it_recorded(tmp_path, data_dir, capsys):
    # accumulation, then a crash at iteration 20: incomplete, the accumulation already visible, model facts kept
    cand = fixture_copy("accum_inner_loop", tmp_path / "c")
    src = (cand / "train_mps.py").read_text()
    (cand / "train_mps.py").write_text(src.replace("        optim.zero_grad(set_to_none=True)\n",
                                                   "        optim.zero_grad(set_to_none=True)\n"
                                                   "        if it == 20:\n            raise RuntimeError('out of memory')\n"))
    m = evaluate(cand, data_dir, 30)
    assert m["status"] == "failed" and "RuntimeError: out of memory" in m["reason"] and not m["valid"]
    kinds = dynamic_kinds(m)
    assert kinds == {"incomplete", "accumulation"}
    inc = next(v for v in m["check"]["dynamic"] if v["kind"] == "incomplete")
    assert "incomplete after 21 optimizer steps" in inc["message"]
    assert m["n_params"] and m["model_file"] == str((ROOT / "torchport" / "model.py").resolve())
    assert main(["check", str(cand)]) == 1
    out = capsys.readouterr().out
    assert "protocol VIOLATED" in out and "incomplete after 21" in out and "protocol kept" not in out


def test_a_failed_clean_run_is_never_kept(tmp_path, data_dir, capsys):
    cand = fixture_copy("reference", tmp_path / "c")
    src = (cand / "train_mps.py").read_text()
    (cand / "train_mps.py").write_text(src.replace("        optim.zero_grad(set_to_none=True)\n",
                                                   "        optim.zero_grad(set_to_none=True)\n"
                                                   "        if it == 5:\n            raise RuntimeError('boom')\n"))
    m = evaluate(cand, data_dir, 30)
    assert m["status"] == "failed" and dynamic_kinds(m) == {"incomplete"}
    assert main(["check", str(cand)]) == 1
    out = capsys.readouterr().out
    assert "protocol kept" not in out and "did not finish" in out and "incomplete after 6 optimizer steps" in out


def test_dynamic_rules_for_accumulation_batches_and_incomplete_runs():
    ev = lambda *s: [{"steps": x, "batches": 1, "line": 40} for x in s]  # noqa: E731
    assert dynamic_violations(counts(eval_events=ev(1, 101)), 101) == []  # evaluated after the step
    assert dynamic_violations(counts(eval_events=ev(0, 100)), 101) == []  # before it
    (v,) = dynamic_violations(counts(eval_events=ev(0, 99)), 101)
    assert v.kind == "evals" and "evaluation 1 came after 99 optimizer steps, not 100 or 101" in v.message
    (v,) = dynamic_violations(counts(eval_events=[{"steps": 0, "batches": 20, "line": 40}, {"steps": 100, "batches": 20, "line": 40}]), 101)
    assert v.kind == "eval_data" and "ran 20 evaluation forwards" in v.message and v.line == 40
    (v,) = dynamic_violations(counts(step_mismatch=[{"step": 1, "forwards": 4, "backwards": 4, "line": 50}], step_mismatch_count=101), 101)
    assert v.kind == "accumulation" and v.line == 50 and "4 training forward(s) and 4 backward pass(es)" in v.message
    v = dynamic_violations(counts(steps=30, eval_events=ev(0)), 101, completed=False, reason="crash: X")
    assert [x.kind for x in v] == ["incomplete"] and "incomplete after 30 optimizer steps (crash: X)" in v[0].message
    v = dynamic_violations(counts(steps=30, eval_events=ev(0), eval_sources={"train": 1}), 101, completed=False)
    assert {x.kind for x in v} == {"incomplete", "eval_data"}


def a_file(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train_mps.py").write_text("x = 1\n")
    return tmp_path / "c" / "train_mps.py"


@pytest.mark.parametrize("make, words", [
    (lambda p: p / "missing", "does not exist"),
    (a_file, "is a file, not a candidate folder; give the folder that holds it"),
])
def test_check_on_a_missing_folder_or_a_file_is_one_line(tmp_path, capsys, make, words):
    assert main(["check", str(make(tmp_path))]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1 and words in cap.err


def test_sampling_text_and_torch_device_are_not_violations(tmp_path, data_dir):
    # a candidate that prints a generated sample at each evaluation and writes torch.device('mps')
    cand = fixture_copy("reference", tmp_path / "c")
    src = (cand / "train_mps.py").read_text()
    src = src.replace("    device = 'mps'\n", "    device = torch.device('mps')\n").replace(
        "            if vloss < best_vloss:\n",
        "            print(model.generate(X[:1, :4], 3, top_k=5).tolist())  # a sample of the model's text\n"
        "            if vloss < best_vloss:\n")
    (cand / "train_mps.py").write_text(src)
    assert static_check(src) == []
    m = evaluate(cand, data_dir, 30)
    assert m["status"] == "ok" and m["valid"], m["check"]
    assert m["check"]["counts"]["generation_forwards"] == 3
    assert any(n["what"] == "device" and n["to"] == "'cpu'" for n in m["check"]["substitutions"])


def test_check_reads_evolves_aggregated_record(tmp_path, capsys):
    # evolve writes one metrics.json over its seeds, without the counts: its dynamic violations carry the seed
    cand = shutil.copytree(CANDIDATES / "reference", tmp_path / "c")
    rec = {"status": "ok", "reason": None, "max_iters": 10001, "protocol_run": True, "seeds": [0, 1],
           "per_seed": ["metrics_s0.json", "metrics_s1.json"],
           "check": {"valid": False, "static": [], "substitutions": [],
                     "dynamic": [{"kind": "steps", "line": 50, "message": "train() took 9000 optimizer steps", "seed": 1}]}}
    (cand / "metrics.json").write_text(json.dumps(rec))
    assert main(["check", str(cand)]) == 1
    out = capsys.readouterr().out
    assert "VIOLATED" in out and "line 50: train() took 9000 optimizer steps (seed 1)" in out and "seeds [0, 1]" in out
