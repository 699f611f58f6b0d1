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
