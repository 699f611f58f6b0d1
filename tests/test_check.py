"""The protocol checker: static violations with their lines, the dynamic counts, and `dreamteam check`."""

import json

import pytest

from dreamteam import harness
from dreamteam.check import Violation, dynamic_violations, expected_evaluations, static_check
from dreamteam.cli import main
from loop_helpers import ROOT, original_candidate, project_variant, small_data


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
    "early stopping with break": ((("            recipes.optimizer_step(model, optimizer, spec.recipe, it)\n",
                                    "            recipes.optimizer_step(model, optimizer, spec.recipe, it)\n"
                                    "            if vloss_curve and vloss_curve[-1][1] < 5.0:\n"
                                    "                break  # early stopping\n"),),
                                  "break  # early stopping", "loop", "`break`"),
    "evaluation on training data": (((' xb, yb = get_batch("val", it)', ' xb, yb = get_batch("train", it)'),),
                                    '                    xb, yb = get_batch("train", it)', "eval", "training batch"),
    "gradient accumulation over 4 batches": ((("            loss.backward()\n            recipes.optimizer_step(model, optimizer, spec.recipe, it)\n",
                                               "            (loss / 4).backward()\n            if (it + 1) % 4 == 0:\n"
                                               "                recipes.optimizer_step(model, optimizer, spec.recipe, it)\n"),),
                                             "recipes.optimizer_step(model, optimizer, spec.recipe, it)", "loop", "conditional"),
    "changed return": ((("return float(best_vloss), float(elapsed_min)", "return float(best_vloss)"),),
                       "return float(best_vloss)", "return", "must return `best_vloss, elapsed_min`"),
    "evaluation every 200": ((("if it % eval_interval == 0:", "if it % (2 * eval_interval) == 0:"),),
                             "if it % (2 * eval_interval) == 0:", "eval", "every 100 iterations"),
    "frozen value reassigned later": ((("    device = resolve_device(device_override or device)\n",
                                        "    device = resolve_device(device_override or device)\n    batch_size = 16\n"),),
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
