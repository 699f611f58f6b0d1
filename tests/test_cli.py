import filecmp
import json
import os

import pytest

from dreamteam.tools.cli import main


def test_prepare_command(shared_data, tmp_path, capsys):
    assert main(["prepare", "--data-dir", str(tmp_path), "--input", str(shared_data / "input.txt")]) == 0
    assert "301,966 tokens" in capsys.readouterr().out
    assert filecmp.cmp(tmp_path / "train.bin", shared_data / "train.bin", shallow=False)


def test_personas_lists_the_registry(capsys, monkeypatch):
    from dreamteam import config, registry

    # a combination credits each component that is not its own to the persona whose theme it is
    mixed = config.Persona("mixed", config.GPTConfig(components=("fixed_point_qat", "ngram_memory")))
    monkeypatch.setitem(registry.PERSONAS, "mixed", mixed)
    assert main(["personas"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "baseline" in lines
    assert "fixed_point_qat (charles_babbage), ngram_memory (alan_turing)" in lines["mixed"]
    assert "(" not in lines["alan_turing"].split("components:")[1].split("Muon")[0]  # its own: no credits


def test_train_rejects_unknown_persona(tmp_path, capsys):
    assert main(["train", "--persona", "nobody", "--device", "cpu", "--out-dir", str(tmp_path)]) == 2
    assert "unknown persona" in capsys.readouterr().err


def test_sample_prints_decoded_text_and_is_reproducible(tmp_path, capsys):
    import json

    import torch
    from safetensors.torch import save_model

    from dreamteam.tools.cli import main
    from dreamteam.config import GPTConfig
    from torchport.model import GPT

    torch.manual_seed(0)
    save_model(GPT(GPTConfig()), str(tmp_path / "b.safetensors"))
    (tmp_path / "b.json").write_text(json.dumps({"persona": "baseline", "status": "ok", "checkpoint": "b.safetensors"}))
    outs = []
    for argv in (["--checkpoint", str(tmp_path / "b.safetensors")], ["--runs", str(tmp_path)]):
        assert main(["sample", "--persona", "baseline", "--prompt", "ROMEO:", "--tokens", "5", "--seed", "3", *argv]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0].startswith("ROMEO:") and len(outs[0]) > len("ROMEO:\n")


def test_sample_without_checkpoint_fails_with_one_clear_error(tmp_path, capsys):
    from dreamteam.tools.cli import main

    assert main(["sample", "--persona", "baseline", "--prompt", "ROMEO:", "--runs", str(tmp_path)]) == 2
    assert "no checkpoint of persona 'baseline'" in capsys.readouterr().err


def test_expert_load_plot_from_a_run_record(tmp_path, capsys):
    import json

    from dreamteam.tools.cli import main

    rec = {"persona": "ada_lovelace", "seed": 0, "device": "cpu", "max_iters": 2000,
           "expert_load": [{"it": 1000, "load": {"transformer.h.0.mlp": [10.0, 30.0], "transformer.h.1.mlp": [20.0, 20.0]}},
                           {"it": 2000, "load": {"transformer.h.0.mlp": [18.0, 22.0], "transformer.h.1.mlp": [21.0, 19.0]}}]}
    (tmp_path / "r.json").write_text(json.dumps(rec))
    assert main(["expert-load", str(tmp_path / "r.json"), "--out", str(tmp_path / "el.png")]) == 0
    assert (tmp_path / "el.png").stat().st_size > 1000
    assert main(["expert-load", str(tmp_path / "r.json")]) == 0  # by default beside the record, never in docs/
    assert (tmp_path / "r_expert_load.png").stat().st_size > 1000
    (tmp_path / "b.json").write_text(json.dumps({"persona": "baseline"}))
    assert main(["expert-load", str(tmp_path / "b.json"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no expert loads" in capsys.readouterr().err


# ---------------------------------------------------------------- every bad input: one line, exit 2


def _no_cuda():
    import torch

    return not torch.cuda.is_available()


# (argv, a fragment of the one error line); {tmp} is a folder, {record} a run record (.json), {ckpt} an empty
# .safetensors-named file that is no checkpoint, {text} a text file
BAD_INPUTS = [
    (["nocommand"], "invalid choice: 'nocommand'"),
    (["prepare", "--input", "{tmp}/missing.txt"], "no such file"),
    (["prepare", "--input", "{text}", "--download"], "not allowed with argument --input"),
    (["train", "--max-iters", "0"], "argument --max-iters: 0: expected a whole number of at least 1"),
    (["train", "--max-iters", "-5"], "argument --max-iters: -5"),
    (["train", "--max-iters", "ten"], "'ten' is not a whole number"),
    (["train", "--seed", "-1"], "argument --seed: -1: a seed is a whole number of at least 0"),
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "--device", "cuda:99"], "this machine has cpu"),
    (["train", "--device", "meta"], "training runs on cpu, cuda, cuda:N or mps"),
    (["train", "--engine", "jax", "--device", "cpu:0", "--out-dir", "{tmp}"], "the JAX loop runs on the CPU"),
    (["train", "--persona", "nobody", "--device", "cpu", "--out-dir", "{tmp}"], "unknown persona 'nobody'"),
    (["anatomy", "--text", "x", "--checkpoint", "{record}"], "expected a run's checkpoint (.safetensors), got a .json file"),
    (["anatomy", "--text", "x", "--seed", "-2"], "argument --seed: -2"),
    (["laplace-rates", "{record}"], "expected a run's checkpoint (.safetensors)"),
    (["laplace-rates", "{tmp}/missing.safetensors"], "missing.safetensors: no such file"),
    (["laplace-rates", "{ckpt}", "--out", "{tmp}/rates.txt"], "expected a PNG file name ending in .png"),
    (["parity", "--steps", "0"], "argument --steps: 0"),
    (["bench", "--seeds", "0", "-3"], "argument --seeds: -3"),
    (["bench", "--max-iters", "0"], "argument --max-iters: 0"),
    (["bench", "--device", "tpu"], "unknown device 'tpu'"),
    (["bench", "--workers", "0"], "argument --workers: 0"),
    (["bench", "--executor", "slurm"], "invalid choice: 'slurm'"),
    (["bench", "--personas", "nobody", "--device", "cpu", "--out", "{tmp}"], "unknown persona 'nobody'"),
    (["bench", "--set", "n_layer=8", "--device", "cpu", "--out", "{tmp}"], "not a tunable field"),
    (["report", "{tmp}/missing"], "not found"),
    (["report", "{tmp}/empty"], "no run records"),
    (["evaluate", "{tmp}", "--seed", "-1"], "argument --seed: -1"),
    (["evaluate", "{tmp}", "--device", "tpu"], "unknown device 'tpu'"),
    (["evaluate", "{tmp}", "--max-iters", "0"], "argument --max-iters: 0"),
    (["check", "{tmp}", "--timeout", "0"], "argument --timeout: 0: expected a finite number above 0"),
    (["propose", "--persona-prompt", "{text}", "--from", "{tmp}", "--out", "{tmp}/o", "--llm-timeout", "-1"],
     "argument --llm-timeout"),
    (["evolve", "--generations", "0", "--population", "2", "--out", "{tmp}/e"], "argument --generations: 0"),
    (["evolve", "--generations", "1", "--population", "2", "--out", "{tmp}/e", "--workers", "0"], "argument --workers: 0"),
    (["evolve", "--generations", "1", "--population", "2", "--out", "{tmp}/e", "--device", "tpu"], "unknown device"),
    (["evolve", "--generations", "1", "--population", "1", "--out", "{tmp}/e"], "population >= 2"),
    (["export-int8", "{record}", "--out", "{tmp}/q.safetensors"], "got a .json file"),
    (["export-int8", "{ckpt}", "--out", "{tmp}/q.json"], "expected a .safetensors file name ending in .safetensors"),
    (["export-int8", "{ckpt}", "--out", "{tmp}/q.safetensors", "--bits", "0"], "argument --bits: 0"),
    (["sample", "--persona", "baseline", "--prompt", "x", "--checkpoint", "{record}"],
     "expected a run's checkpoint (.safetensors), got a .json file"),
    (["sample", "--persona", "baseline", "--prompt", "x", "--checkpoint", "{ckpt}"], "is not a safetensors checkpoint"),
    (["sample", "--persona", "baseline", "--prompt", "x", "--tokens", "0"], "argument --tokens: 0"),
    (["sample", "--persona", "baseline", "--prompt", "x", "--seed", "-1"], "argument --seed: -1"),
    (["sample", "--persona", "baseline", "--prompt", "x", "--p-min", "1.5"], "expected a number in (0, 1]"),
    (["sample", "--persona", "baseline", "--prompt", "x", "--temperature", "0"], "argument --temperature: 0"),
    (["sample", "--persona", "baseline", "--prompt", "x", "--top-k", "0"], "argument --top-k: 0"),
    (["sample", "--persona", "nobody", "--prompt", "x", "--runs", "{tmp}"], "unknown persona 'nobody'"),
    (["expert-load", "{ckpt}"], "expected a run record (.json)"),
    (["expert-load", "{text}.json"], "no such file"),
    (["expert-load", "{badjson}"], "is not readable JSON"),
]


@pytest.mark.parametrize("argv, fragment", BAD_INPUTS, ids=[" ".join(a[:3]) for a, _ in BAD_INPUTS])
def test_every_bad_input_is_one_line_and_exit_2(argv, fragment, tmp_path, capsys, monkeypatch):
    import train_mps

    monkeypatch.setattr(train_mps, "train", _must_not_run)
    monkeypatch.setattr(train_mps, "main", _must_not_run)
    (tmp_path / "run.json").write_text(json.dumps({"persona": "baseline", "status": "ok"}))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "run.safetensors").write_bytes(b"")
    (tmp_path / "input.txt").write_text("To be, or not to be")
    (tmp_path / "empty").mkdir()
    if fragment == "this machine has cpu" and not _no_cuda():
        fragment = "is not there"
    names = {"tmp": str(tmp_path), "record": str(tmp_path / "run.json"), "ckpt": str(tmp_path / "run.safetensors"),
             "text": str(tmp_path / "input.txt"), "badjson": str(tmp_path / "bad.json")}
    assert main([a.format(**names) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err and "Traceback" not in err + out


def _must_not_run(*args, **kwargs):
    raise AssertionError("a bad argument started the work")


def test_cuda_without_cuda_names_what_the_machine_has(capsys):
    if not _no_cuda():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available on this machine; this machine has cpu" in err and len(err.splitlines()) == 1


def test_mps_is_accepted_and_falls_back_as_the_protocol_does(capsys):
    """--device mps is never an input error: where MPS is missing the run says so and falls back (train_mps)."""
    import torch

    import train_mps
    from dreamteam import arguments

    assert arguments.check_device("mps") == "mps"
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert train_mps.resolve_device("mps") in ("cuda", "cpu")
    assert "MPS is not available" in capsys.readouterr().out


def test_train_passes_an_explicit_iteration_count_on(monkeypatch):
    import train_mps

    seen = []
    monkeypatch.setattr(train_mps, "main", lambda argv: seen.append(argv) or 0)
    assert main(["train", "--max-iters", "1", "--device", "cpu"]) == 0
    assert seen[0][seen[0].index("--max-iters") + 1] == "1"


def test_bad_inputs_from_the_shell_are_one_line(tmp_path):
    """The same through the real entry points: `python -m dreamteam` and `python train_mps.py`."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    for cmd in ([sys.executable, "-m", "dreamteam", "train", "--max-iters", "0"],
                [sys.executable, str(root / "train_mps.py"), "--max-iters", "-5"],
                [sys.executable, str(root / "train_mps.py"), "--device", "tpu"]):
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stdout == "", (cmd, r.stderr)


def test_prepare_offline_download_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    from dreamteam import data

    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "data" / "shakespeare"
    assert main(["prepare", "--data-dir", str(target), "--download"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert data.INPUT_URL in err and "--input PATH" in err
    assert not (tmp_path / "data").exists()


def test_prepare_without_a_text_uses_the_shipped_one(shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DREAMTEAM_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["prepare"]) == 0
    assert "from the tiny Shakespeare shipped with the package" in capsys.readouterr().out
    for split in ("train", "val"):
        assert filecmp.cmp(tmp_path / "data" / "shakespeare" / f"{split}.bin", shared_data / f"{split}.bin", shallow=False)


# ---------------------------------------------------------------- --help


def _subcommands():
    import argparse

    from dreamteam.tools.cli import build_parser

    ap = build_parser()
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_option_of_every_command_is_described_with_its_default():
    import argparse

    commands = _subcommands()
    assert {"prepare", "train", "bench", "report", "sample", "evolve", "evaluate"} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"dreamteam {name} {action.dest}: no description"
            shown = formatter._get_help_string(action) % dict(vars(action), prog=parser.prog)
            flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            positional = not action.option_strings and action.default is None
            assert "default" in shown or action.required or flag or positional, f"dreamteam {name} {action.dest}: {shown!r}"
        assert "--help" in text


def test_help_names_numeric_defaults_even_when_zero(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "seed of the weights and of the batches (default: 0)" in " ".join(out.split())
    assert main(["bench", "--help"]) == 0
    assert "(default: 0 1 2)" in " ".join(capsys.readouterr().out.split())
