"""Persona proposals: build the prompt, ask any LLM command, parse the answer into a candidate folder.

    dreamteam propose --persona-prompt FILE --from DIR --out DIR2 [--llm-command CMD]

The prompt is the persona text, then the current train_mps.py and model.py (DIR's, the project's model.py
where DIR has none), then the required answer format: two fenced blocks named train_mps.py and model.py.
With --llm-command the prompt goes to CMD on standard input (any program: a local model server's client,
an API's command line) and its standard output is the answer; without it nothing is contacted and the
prompt is written to DIR2/prompt.md.

The answer is parsed robustly (the original loop kept a block only if its first line began with `import`):
a block is named by its fence's info string (```python train_mps.py, ```model.py) or by a heading or
sentence just before it that names the file; its text may begin with anything (a comment, a docstring, a
`from` import); an empty block means "unchanged", as does a missing one; a block that does not compile is
rejected with its syntax error recorded, and so is the whole proposal. DIR2/proposal.json says what was
taken from where.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dreamteam import runs

FILES = ("train_mps.py", "model.py")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$", re.M)

ANSWER_FORMAT = """\
## Answer format

Answer with the complete new versions of both files, each in its own fenced code block named by the file:

```python train_mps.py
<the whole of the new train_mps.py>
```

```python model.py
<the whole of the new model.py>
```

Leave a block empty to keep that file unchanged. Keep the frozen protocol of train_mps.py: the names marked
"not to be changed" keep their values, every one of the max_iters iterations is one optimizer step (no early
stopping, no gradient accumulation), evaluate on one validation batch when it % eval_interval == 0, and
train() returns best_vloss, elapsed_min.
"""


class ProposalError(ValueError):
    pass


def build_prompt(persona_text: str, train_source: str, model_source: str) -> str:
    return (f"{persona_text.rstrip()}\n\n## The current train_mps.py\n\n```python train_mps.py\n{train_source.rstrip()}\n```\n\n"
            f"## The current model.py\n\n```python model.py\n{model_source.rstrip()}\n```\n\n{ANSWER_FORMAT}")


def _name_in(text: str) -> str | None:
    found = [f for f in FILES if re.search(rf"(?<![\w.]){re.escape(f)}(?!\w)", text)]
    return found[0] if len(found) == 1 else None


@dataclass
class Block:
    name: str | None
    text: str
    line: int  # line of the opening fence in the answer


@dataclass
class Parsed:
    files: dict = field(default_factory=dict)  # name -> source, for the blocks that were given and compile
    status: dict = field(default_factory=dict)  # name -> "changed" | "unchanged (empty block)" | "unchanged (no block)" | "rejected: ..."
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(s.startswith("rejected") for s in self.status.values())


def fenced_blocks(answer: str) -> list[Block]:
    """Every fenced block of the answer with the file it names (info string, or the text just before it)."""
    lines = answer.splitlines()
    blocks, i, prev_text = [], 0, []
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                prev_text.append(lines[i])
            i += 1
            continue
        fence, info, start = m["fence"], m["info"].strip(), i
        body = []
        i += 1
        while i < len(lines):
            m2 = FENCE.match(lines[i])
            if m2 and m2["fence"][0] == fence[0] and len(m2["fence"]) >= len(fence) and not m2["info"].strip():
                break
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence (or the end of an unterminated block)
        name = _name_in(info) or _name_in(" ".join(prev_text[-2:]))
        text = "\n".join(body)
        if name is None and body:  # a first-line comment naming the file: "# model.py", "# file: train_mps.py"
            first = body[0].strip()
            if first.startswith("#"):
                name = _name_in(first)
        blocks.append(Block(name, text + ("\n" if text else ""), start + 1))
        prev_text = []
    return blocks


def parse_answer(answer: str) -> Parsed:
    parsed = Parsed()
    named: dict[str, Block] = {}
    for b in fenced_blocks(answer):
        if b.name is None:
            parsed.notes.append(f"answer line {b.line}: a block that names neither file was ignored")
        elif b.name in named:
            parsed.notes.append(f"answer line {b.line}: a second {b.name} block; the last one is kept")
            named[b.name] = b
        else:
            named[b.name] = b
    for name in FILES:
        b = named.get(name)
        if b is None:
            parsed.status[name] = "unchanged (no block)"
        elif not b.text.strip():
            parsed.status[name] = "unchanged (empty block)"
        else:
            try:
                compile(b.text, name, "exec")
            except SyntaxError as e:
                parsed.status[name] = f"rejected: {name} line {e.lineno}: {e.msg} (answer line {b.line + (e.lineno or 0)})"
                continue
            parsed.files[name] = b.text
            parsed.status[name] = "changed"
    if not parsed.files and parsed.ok:
        parsed.notes.append("the answer changes neither file")
    return parsed


def current_sources(from_dir: Path) -> dict:
    from dreamteam.tools.harness import PROJECT_ROOT

    out = {}
    for name in FILES:
        p = Path(from_dir) / name
        out[name] = (p if p.exists() else PROJECT_ROOT / name).read_text()
    return out


def ask(command: str, prompt: str, timeout_s: float = 600) -> str:
    """Send the prompt to `command` (a shell command line) on standard input; its standard output is the answer."""
    try:
        r = subprocess.run(command, shell=True, input=prompt, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ProposalError(f"the LLM command {command!r} gave no answer within {timeout_s:g} s") from None
    if r.returncode != 0:
        raise ProposalError(f"the LLM command {command!r} exited with code {r.returncode}: {r.stderr.strip()[-500:]}")
    return r.stdout


def propose(persona_prompt: str | Path, from_dir: str | Path, out_dir: str | Path, llm_command: str | None = None,
            timeout_s: float = 600) -> dict:
    """Build the prompt; with llm_command, ask it and write the candidate into out_dir. Returns proposal.json's content."""
    persona_prompt, from_dir, out_dir = Path(persona_prompt), Path(from_dir), Path(out_dir)
    if not persona_prompt.is_file():
        raise ProposalError(f"persona prompt {persona_prompt} not found")
    src = current_sources(from_dir)
    prompt = build_prompt(persona_prompt.read_text(), src["train_mps.py"], src["model.py"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prompt.md").write_text(prompt)
    record = {"persona_prompt": str(persona_prompt), "from": str(from_dir), "prompt": "prompt.md", "llm_command": llm_command}
    if not llm_command:
        record.update(status="prompt only", message=f"no --llm-command: nothing was contacted; the prompt is in {out_dir / 'prompt.md'}")
        runs.write_json_atomic(out_dir / "proposal.json", record)
        return record
    try:
        answer = ask(llm_command, prompt, timeout_s)
    except ProposalError as e:
        record.update(status="rejected", message=str(e))
        runs.write_json_atomic(out_dir / "proposal.json", record)
        return record
    (out_dir / "answer.md").write_text(answer)
    parsed = parse_answer(answer)
    record.update(answer="answer.md", files=parsed.status, notes=parsed.notes)
    if not parsed.ok:
        record.update(status="rejected", message="; ".join(s for s in parsed.status.values() if s.startswith("rejected")))
    elif not parsed.files:
        record.update(status="rejected", message="the answer changes neither file (no block names train_mps.py or model.py, or both are empty)")
    else:
        for name in FILES:
            (out_dir / name).write_text(parsed.files.get(name, src[name]))
        record.update(status="accepted", message=", ".join(f"{n}: {s}" for n, s in parsed.status.items()))
    runs.write_json_atomic(out_dir / "proposal.json", record)
    return record


def add_arguments(p) -> None:
    from dreamteam import arguments

    p.add_argument("--persona-prompt", required=True, metavar="FILE", help="the persona's instructions (text)")
    p.add_argument("--from", dest="from_dir", required=True, metavar="DIR", help="the candidate to improve (train_mps.py, model.py)")
    p.add_argument("--out", required=True, metavar="DIR2", help="where the prompt, the answer and the new candidate go")
    p.add_argument("--llm-command", default=None, metavar="CMD",
                   help="a command that reads the prompt on stdin and answers on stdout (default: write the prompt only)")
    p.add_argument("--llm-timeout", type=arguments.positive_float, default=600, metavar="S",
                   help="seconds the command may take")


def main(args) -> int:
    try:
        rec = propose(args.persona_prompt, args.from_dir, args.out, args.llm_command, args.llm_timeout)
    except ProposalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{rec['status']}: {rec['message']}")
    return 0 if rec["status"] in ("accepted", "prompt only") else 1

