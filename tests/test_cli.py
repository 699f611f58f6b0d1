import filecmp

from dreamteam.cli import main


def test_prepare_command(shared_data, tmp_path, capsys):
    assert main(["prepare", "--data-dir", str(tmp_path), "--input", str(shared_data / "input.txt")]) == 0
    assert "301,966 tokens" in capsys.readouterr().out
    assert filecmp.cmp(tmp_path / "train.bin", shared_data / "train.bin", shallow=False)


def test_prepare_without_input_says_what_is_missing(tmp_path, capsys):
    assert main(["prepare", "--data-dir", str(tmp_path)]) == 2
    assert "input.txt not found" in capsys.readouterr().err


def test_personas_lists_the_registry(capsys):
    assert main(["personas"]) == 0
    assert "baseline" in capsys.readouterr().out


def test_train_rejects_unknown_persona(tmp_path, capsys):
    assert main(["train", "--persona", "nobody", "--device", "cpu", "--out-dir", str(tmp_path)]) == 2
    assert "unknown persona" in capsys.readouterr().err


def test_sample_prints_decoded_text_and_is_reproducible(tmp_path, capsys):
    import json

    import torch
    from safetensors.torch import save_model

    from dreamteam.cli import main
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
    from dreamteam.cli import main

    assert main(["sample", "--persona", "baseline", "--prompt", "ROMEO:", "--runs", str(tmp_path)]) == 2
    assert "no checkpoint of persona 'baseline'" in capsys.readouterr().err


def test_expert_load_plot_from_a_run_record(tmp_path, capsys):
    import json

    from dreamteam.cli import main

    rec = {"persona": "ada_lovelace", "seed": 0, "device": "cpu", "max_iters": 2000,
           "expert_load": [{"it": 1000, "load": {"transformer.h.0.mlp": [10.0, 30.0], "transformer.h.1.mlp": [20.0, 20.0]}},
                           {"it": 2000, "load": {"transformer.h.0.mlp": [18.0, 22.0], "transformer.h.1.mlp": [21.0, 19.0]}}]}
    (tmp_path / "r.json").write_text(json.dumps(rec))
    assert main(["expert-load", str(tmp_path / "r.json"), "--out", str(tmp_path / "el.png")]) == 0
    assert (tmp_path / "el.png").stat().st_size > 1000
    (tmp_path / "b.json").write_text(json.dumps({"persona": "baseline"}))
    assert main(["expert-load", str(tmp_path / "b.json"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no expert loads" in capsys.readouterr().err
