"""dreamteam evaluate: the candidate's own model runs, substitutions, failures recorded, metrics.json."""

import importlib.util
import json
import math
import shutil

import pytest

from dreamteam.tools import harness
from dreamteam.tools.cli import main
from loop_helpers import ORIGINAL, ROOT, VOCAB, original_candidate, small_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return small_data(tmp_path_factory.mktemp("data"))


def count_params(model_file, vocab):
    spec = importlib.util.spec_from_file_location("candidate_model", model_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return sum(p.numel() for p in mod.GPT(mod.GPTConfig(vocab_size=vocab)).parameters())


def test_substitute_changes_exactly_the_data_paths_and_device_line(tmp_path):
    src = (ORIGINAL / "train_mps.py").read_text()
    d = tmp_path / "d"
    new, notes = harness.substitute(src, d, "cpu")
    changed = [(i, a, b) for i, (a, b) in enumerate(zip(src.splitlines(), new.splitlines()), 1) if a != b]
    assert len(src.splitlines()) == len(new.splitlines())
    # the path expressions that name train.bin and val.bin, not the data_dir assignment (line 14)
    assert [(i, b.strip()) for i, _, b in changed] == [
        (22, "device = 'cpu'  # not to be changed"),
        (25, f"train_data = np.memmap({str(d / 'train.bin')!r}, dtype=np.uint16, mode='r')"),
        (26, f"val_data = np.memmap({str(d / 'val.bin')!r}, dtype=np.uint16, mode='r')")]
    assert sorted((n["what"], n["line"]) for n in notes) == [("data", 25), ("data", 26), ("device", 22)]
    assert harness.substitute(src, tmp_path, "mps")[0].count("device = 'mps'") == 1  # nothing to do for mps
    new, notes = harness.substitute(src, tmp_path, "cpu", max_iters=30)
    assert "max_iters = 30  # not to be changed" in new and any(n["what"] == "max_iters" for n in notes)


def test_substitute_replaces_data_files_written_out_in_full():
    src = "import numpy as np\ntrain = np.memmap('/Users/a/nanoGPT/data/train.bin', dtype=np.uint16)\n" \
          "val = np.memmap('data/shakespeare/val.bin', dtype=np.uint16)\nx = 'train.bin'\nprint('loading train.bin')\n"
    new, notes = harness.substitute(src, "/d", "cpu")
    assert new.splitlines()[1:] == ["train = np.memmap('/d/train.bin', dtype=np.uint16)",
                                    "val = np.memmap('/d/val.bin', dtype=np.uint16)", "x = '/d/train.bin'",
                                    "print('loading train.bin')"]
    assert sorted(n["line"] for n in notes) == [2, 3, 4] and {n["what"] for n in notes} == {"data"}


def test_substitute_leaves_the_projects_loader_alone():
    src = (ROOT / "train_mps.py").read_text()
    new, notes = harness.substitute(src, "/x", "cpu")
    assert [n["what"] for n in notes] == ["device"]
    assert sum(a != b for a, b in zip(src.splitlines(), new.splitlines())) == 1


def test_evaluate_runs_the_candidates_own_model(tmp_path, data_dir, capsys):
    cand = original_candidate(tmp_path / "c")
    assert main(["evaluate", str(cand), "--data-dir", str(data_dir), "--max-iters", "30", "--val-windows", "8", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    m = json.loads((cand / "metrics.json").read_text())
    assert m["status"] == "ok" and m["valid"] and m["seed"] == 1
    # the candidate's own model ran: its file, its class and its parameter count, not the project's
    assert m["model_file"] == str((cand / "model.py").resolve())
    own = count_params(cand / "model.py", VOCAB)
    assert m["n_params"] == own != count_params(ROOT / "model.py", VOCAB)
    assert f"n_params {own}" in out
    assert m["fitness"] == pytest.approx(m["best_vloss"] + 0.01 * m["elapsed_min"])
    assert m["val_loss"] is not None and 0 < m["val_loss"] < math.log(VOCAB) + 1 and m["val_windows"] == 8
    assert {n["what"] for n in m["check"]["substitutions"]} == {"data", "device", "max_iters"}
    assert "replaced by the configured" in out and m["protocol_run"] is False


def test_evaluate_falls_back_to_the_projects_model(tmp_path, data_dir):
    cand = original_candidate(tmp_path / "c")
    (cand / "model.py").unlink()
    m = harness.evaluate(cand, data_dir=data_dir, max_iters=20, val_windows=4)
    assert m["status"] == "ok" and m["model_class"] == "torchport.model.GPT"
    assert m["n_params"] == count_params(ROOT / "model.py", VOCAB)


FAILURES = {
    "crash": ("        loss.backward()\n", "        loss.backward()\n        raise RuntimeError('candidate bug')\n", "crash: RuntimeError: candidate bug"),
    "wrong return": ("    return best_vloss, elapsed_min\n", "    return {'best': best_vloss}\n", "wrong return"),
    "nan": ("    return best_vloss, elapsed_min\n", "    return float('nan'), elapsed_min\n", "non-finite"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_failures_are_recorded_with_their_reason(tmp_path, data_dir, case):
    old, new, reason = FAILURES[case]
    cand = original_candidate(tmp_path / "c", (old, new))
    m = harness.evaluate(cand, data_dir=data_dir, max_iters=5, val_windows=2)
    assert m["status"] == "failed" and reason in m["reason"] and m["fitness"] == math.inf and not m["valid"]
    assert m["val_loss"] is None and m["val_loss_absent"]
    assert json.loads((cand / "metrics.json").read_text())["reason"] == m["reason"]
    assert harness.rank_key(m) > harness.rank_key({"status": "ok", "valid": False, "fitness": 99.0})
    if case == "crash":
        assert "candidate bug" in m["traceback"]


def test_timeout_is_a_failure_and_the_process_is_gone(tmp_path, data_dir):
    cand = original_candidate(tmp_path / "c", ("    t0 = time.time()\n", "    t0 = time.time()\n    time.sleep(600)\n"))
    m = harness.evaluate(cand, data_dir=data_dir, max_iters=5, timeout_min=0.1)
    assert m["status"] == "failed" and m["reason"].startswith("timeout") and m["wall_s"] < 60


def test_a_timeout_inside_training_keeps_the_counts(tmp_path, data_dir):
    # SIGTERM first: the runner writes the counts it has, so the run is judged incomplete, never kept
    cand = original_candidate(tmp_path / "c", ("        optimizer.step()\n", "        optimizer.step()\n        if iter == 2:\n            time.sleep(600)\n"))
    m = harness.evaluate(cand, data_dir=data_dir, max_iters=5, timeout_min=0.75)
    assert m["status"] == "failed" and m["reason"].startswith("timeout") and not m["valid"]
    assert m["check"]["counts"]["steps"] == 3
    (v,) = m["check"]["dynamic"]
    assert v["kind"] == "incomplete" and "incomplete after 3 optimizer steps" in v["message"]
    assert m["n_params"]  # which model ran, though it did not finish


def test_a_folder_without_a_candidate_is_one_clear_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "neither train_mps.py nor genome.json" in capsys.readouterr().err


CANDIDATES = ROOT / "tests" / "fixtures" / "candidates"


def test_substitute_rewrites_every_spelling_of_a_data_path_and_keeps_the_lines():
    src = ("import os\nfrom pathlib import Path\nroot = '/Users/x/data'\n"
           "a = np.memmap(os.path.join(root, 'shakespeare', 'train.bin'), dtype=np.uint16)\n"
           "b = np.fromfile(Path(root) / 'shakespeare' / 'val.bin', dtype=np.uint16)\n"
           "c = open(f'{root}/shakespeare/train.bin', 'rb')\n"
           "d = np.memmap(root + '/val.bin', dtype=np.uint16)\n"
           "e = np.memmap(os.path.join(root,\n                           'shakespeare/val.bin'), dtype=np.uint16)\n"
           "f = os.path.join(root, f'{split}.bin')\nprint('reading train.bin')\n")
    new, notes = harness.substitute(src, "/d", "cpu")
    lines = new.splitlines()
    assert len(lines) == len(src.splitlines())
    assert lines[3] == "a = np.memmap('/d/train.bin', dtype=np.uint16)"
    assert lines[4] == "b = np.fromfile(__import__('pathlib').Path('/d/val.bin'), dtype=np.uint16)"
    assert lines[5] == "c = open('/d/train.bin', 'rb')"
    assert lines[6] == "d = np.memmap('/d/val.bin', dtype=np.uint16)"
    assert lines[7] == "e = np.memmap(('/d/val.bin'" and lines[8].strip() == "), dtype=np.uint16)"
    assert lines[9:] == src.splitlines()[9:] and lines[2] == "root = '/Users/x/data'"
    assert [(n["line"], n["file"]) for n in notes] == [(4, "train.bin"), (5, "val.bin"), (6, "train.bin"), (7, "val.bin"), (8, "val.bin")]
    assert all(n["message"].startswith(f"line {n['line']}: data path ") for n in notes)
    compile(new, "x", "exec")
    # a file name built at run time: the data folder assignment is pointed at the data instead
    new, notes = harness.substitute("data_dir = '/Users/x/data'\nf = os.path.join(data_dir, f'{split}.bin')\n", "/d", "cpu")
    assert new.splitlines()[0] == "data_dir = '/d'" and [n["line"] for n in notes] == [1]


def test_a_data_folder_without_the_files_is_one_line_naming_what_the_candidate_asked_for(tmp_path, data_dir, capsys):
    parent = tmp_path / "data"
    shutil.copytree(data_dir, parent / "shakespeare")
    cand = shutil.copytree(CANDIDATES / "reference", tmp_path / "ref")
    assert main(["evaluate", str(cand), "--data-dir", str(parent), "--max-iters", "5"]) == 2
    cap = capsys.readouterr()
    (line,) = cap.err.strip().splitlines()
    assert line.startswith(f"error: the data folder {parent} ") and "holds no train.bin" in line
    assert 'os.path.join(data_dir, "shakespeare/train.bin")' in line or "os.path.join(data_dir, 'shakespeare/train.bin')" in line
    assert "(line 20)" in line and f"train.bin is in {parent / 'shakespeare'}" in line
    assert main(["check", str(cand), "--run", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_data_folder_comes_from_the_environment(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("DREAMTEAM_DATA", str(data_dir))
    cand = original_candidate(tmp_path / "c")
    assert main(["evaluate", str(cand), "--max-iters", "3", "--val-windows", "2"]) == 0
    m = json.loads((cand / "metrics.json").read_text())
    assert m["data_dir"] == str(data_dir.resolve()) and m["status"] == "ok"


def test_the_cli_prints_the_candidates_real_error(tmp_path, data_dir, capsys):
    # a path the harness cannot rewrite (the file name is built at run time, the folder has another name)
    cand = original_candidate(tmp_path / "c", ("    data_dir = '/Users/someone/nanoGPT/data/shakespeare'\n", "    root = '/nonexistent/shakespeare'\n"),
                              ("os.path.join(data_dir, 'train.bin')", "os.path.join(root, 'tr' + 'ain.bin')"))
    assert main(["evaluate", str(cand), "--data-dir", str(data_dir), "--max-iters", "3"]) == 1
    out = capsys.readouterr().out
    assert "failed (crash: FileNotFoundError" in out and "/nonexistent/shakespeare/train.bin" in out
    m = json.loads((cand / "metrics.json").read_text())
    assert m["check"]["dynamic"][0]["kind"] == "incomplete" and not m["valid"]


def test_the_hooks_change_no_number(tmp_path, data_dir, capsys):
    # a bare run (--no-hooks, what docs/loop.md's hook cost is measured against) gives the same losses
    hooked = harness.evaluate(original_candidate(tmp_path / "h"), data_dir=data_dir, max_iters=20, val_windows=4, seed=3)
    assert main(["evaluate", str(original_candidate(tmp_path / "b")), "--data-dir", str(data_dir), "--max-iters", "20",
                 "--val-windows", "4", "--seed", "3", "--no-hooks"]) == 1
    assert "a bare run, --no-hooks: not checked dynamically" in capsys.readouterr().out
    bare = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert hooked["valid"] and not bare["valid"] and bare["check"]["counts"] is None and bare["hooks"] is False
    assert bare["best_vloss"] == hooked["best_vloss"] and hooked["val_loss"] is not None
    assert bare["val_loss"] is None and bare["val_loss_absent"]  # the model is found through the hooks


def test_a_failed_run_without_violations_is_not_kept(tmp_path, data_dir, capsys):
    # every step and evaluation as the protocol wants, then a NaN returned: failed, and check does not say kept
    cand = original_candidate(tmp_path / "c", ("    return best_vloss, elapsed_min\n",
                                               "    best_vloss = float('nan')  # diverged\n    return best_vloss, elapsed_min\n"))
    m = harness.evaluate(cand, data_dir=data_dir, max_iters=5, val_windows=2)
    assert m["status"] == "failed" and m["check"]["static"] == m["check"]["dynamic"] == [] and not m["valid"]
    assert main(["check", str(cand)]) == 1
    out = capsys.readouterr().out
    assert "not shown: the run failed" in out and "protocol kept" not in out
