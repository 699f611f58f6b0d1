"""dreamteam propose: the prompt, a fake LLM command with canned answers (malformed ones too), robust parsing."""

import json
import shlex
import sys

import pytest

from dreamteam.tools import propose
from dreamteam.tools.cli import main
from loop_helpers import ORIGINAL, ROOT

NEW_TRAIN = '"""A docstring first: the original loop dropped this block."""\nfrom model import GPT\n\n\ndef train():\n    return 1.0, 2.0\n'
NEW_MODEL = "# a leading comment\nfrom torch import nn\n\nGPT = nn.Linear\n"


def fake_llm(tmp_path, answer: str) -> str:
    """A command that saves the prompt it reads on stdin and prints a canned answer."""
    (tmp_path / "answer.txt").write_text(answer)
    script = tmp_path / "fake_llm.py"
    script.write_text("import sys, pathlib\nd = pathlib.Path(sys.argv[1])\n(d / 'got_prompt.txt').write_text(sys.stdin.read())\n"
                      "sys.stdout.write((d / 'answer.txt').read_text())\n")
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(str(tmp_path))}"


@pytest.fixture
def persona(tmp_path):
    p = tmp_path / "ada.md"
    p.write_text("You are Ada Lovelace. Improve the model with a mathematically grounded change.")
    return p


def test_prompt_is_persona_then_both_files_then_the_format(tmp_path, persona):
    cmd = fake_llm(tmp_path, f"```python train_mps.py\n{NEW_TRAIN}```\n")
    rec = propose.propose(persona, ORIGINAL, tmp_path / "out", cmd)
    prompt = (tmp_path / "got_prompt.txt").read_text()
    assert prompt == (tmp_path / "out" / "prompt.md").read_text()
    i_persona, i_train, i_model, i_format = (prompt.index("You are Ada"), prompt.index((ORIGINAL / "train_mps.py").read_text()[:200]),
                                             prompt.index((ORIGINAL / "model.py").read_text()[:200]), prompt.index("## Answer format"))
    assert i_persona < i_train < i_model < i_format
    assert "```python train_mps.py" in prompt[i_format:] and "```python model.py" in prompt[i_format:]
    assert rec["status"] == "accepted" and rec["files"] == {"train_mps.py": "changed", "model.py": "unchanged (no block)"}
    assert (tmp_path / "out" / "train_mps.py").read_text() == NEW_TRAIN
    assert (tmp_path / "out" / "model.py").read_text() == (ORIGINAL / "model.py").read_text()


def test_without_a_command_nothing_is_contacted_and_the_prompt_is_written(tmp_path, persona, capsys):
    assert main(["propose", "--persona-prompt", str(persona), "--from", str(ROOT), "--out", str(tmp_path / "o")]) == 0
    assert "nothing was contacted" in capsys.readouterr().out
    assert (tmp_path / "o" / "prompt.md").read_text().startswith("You are Ada")
    assert not (tmp_path / "o" / "train_mps.py").exists()


ANSWERS = {
    "info strings": (f"Here you go.\n\n```python train_mps.py\n{NEW_TRAIN}```\n\n```python model.py\n{NEW_MODEL}```\n",
                     {"train_mps.py": "changed", "model.py": "changed"}),
    "headings before bare fences": (f"### train_mps.py\n```\n{NEW_TRAIN}```\n**model.py**:\n```py\n{NEW_MODEL}```\n",
                                    {"train_mps.py": "changed", "model.py": "changed"}),
    "names as first-line comments, tildes": (f"~~~python\n# model.py\n{NEW_MODEL}~~~\n```python\n# file: train_mps.py\n{NEW_TRAIN}```\n",
                                             {"train_mps.py": "changed", "model.py": "changed"}),
    "empty block means unchanged": (f"```train_mps.py\n```\n```model.py\n{NEW_MODEL}```\n",
                                    {"train_mps.py": "unchanged (empty block)", "model.py": "changed"}),
}


@pytest.mark.parametrize("case", ANSWERS)
def test_answers_are_parsed_robustly(case):
    answer, status = ANSWERS[case]
    parsed = propose.parse_answer(answer)
    assert parsed.ok and parsed.status == status
    for name, s in status.items():
        if s == "changed":
            # the text of the block, whatever it begins with (a naming comment stays: it is part of the file)
            assert parsed.files[name].endswith(NEW_TRAIN if name == "train_mps.py" else NEW_MODEL)


def test_a_block_that_does_not_compile_is_rejected_with_its_error(tmp_path, persona, capsys):
    bad = "def train(:\n    return 1\n"
    cmd = fake_llm(tmp_path, f"```python model.py\n{NEW_MODEL}```\n\n```python train_mps.py\n{bad}```\n")
    out = tmp_path / "o"
    assert main(["propose", "--persona-prompt", str(persona), "--from", str(ORIGINAL), "--out", str(out), "--llm-command", cmd]) == 1
    rec = json.loads((out / "proposal.json").read_text())
    assert rec["status"] == "rejected" and rec["files"]["train_mps.py"].startswith("rejected: train_mps.py line 1:")
    assert "rejected" in capsys.readouterr().out and not (out / "train_mps.py").exists()
    assert (out / "answer.md").exists()


def test_unnamed_blocks_and_prose_are_ignored_not_guessed():
    parsed = propose.parse_answer(f"Sure!\n```python\n{NEW_TRAIN}```\nThat is all.")
    assert parsed.ok and parsed.files == {} and "names neither file" in parsed.notes[0]


def test_a_failing_command_is_a_recorded_rejection(tmp_path, persona):
    rec = propose.propose(persona, ROOT, tmp_path / "o", f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'")
    assert rec["status"] == "rejected" and "exited with code 3" in rec["message"]
