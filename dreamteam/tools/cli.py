"""The `dreamteam` command line (`python -m dreamteam` from a checkout). Each command imports the engine it
runs inside the command, so that importing this module imports none (tests/test_layout.py).

    dreamteam prepare  [--data-dir DIR] [--input PATH | --download [URL]]   (default text: the shipped tiny Shakespeare)
    dreamteam train    [--engine torch|jax] [--persona NAME] [--seed S] [--max-iters N] [--device D] [--out-dir DIR]
                       [--threads N] [--set KEY=VALUE ...] [--resume RECORD.json]
    dreamteam parity   [--persona NAME ...] [--dtype ...] [--json PATH]     (same as python -m parity)
    dreamteam personas
    dreamteam bench    [--personas NAME ...] [--seeds S ...] [--device auto|D] [--out DIR] [--max-iters N] [--ablate NAME] [--set KEY=VALUE ...]
                       [--threads N] [--executor local|ray] [--workers N] [--ray-address ADDRESS] [--reuse-records DIR ...]
    dreamteam report   [RUNS_DIR] [--out DIR] [--speed FILE ...]          (default --out: RUNS_DIR itself)
    dreamteam evaluate DIR [--seed S] [--timeout MIN] [--device D] [--data-dir DIR]
    dreamteam check    DIR [--run ...]
    dreamteam propose  --persona-prompt FILE --from DIR --out DIR2 [--llm-command CMD]
    dreamteam evolve   --generations G --population P --out DIR [--llm-command CMD --persona-prompts DIR] [--executor local|ray]
    dreamteam export-int8 CHECKPOINT.safetensors --out FILE [--persona NAME] [--bits B] [--windows N]
    dreamteam laplace-rates CHECKPOINT [--out PNG]     (the learned decay rates of laplace_bias)
    dreamteam expert-load RECORD.json [--out PNG]
    dreamteam sample   --persona NAME --prompt TEXT [--checkpoint FILE.safetensors | --runs DIR]
                       [--sampler min_p|typical|top_k|temperature] [--seed S] [--tokens N]

Every argument is checked before any work starts (dreamteam/arguments.py): a bad one is one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from dreamteam import arguments
from dreamteam.tools import executors


def _prepare(args) -> int:
    from dreamteam import data

    d = data.resolve_data_dir(args.data_dir, os.environ)
    if args.input:
        source = args.input
    elif (d / "input.txt").is_file():
        source = str(d / "input.txt")
    elif args.download:
        source = data.INPUT_URL if args.download is True else args.download
    else:
        source = "the tiny Shakespeare shipped with the package"
    info = data.prepare(d, args.input, download=args.download)
    print(f"wrote {d}/train.bin ({info['train_tokens']:,} tokens) and {d}/val.bin ({info['val_tokens']:,} tokens) "
          f"from {source}")
    return 0


def _train(args) -> int:
    from dreamteam import registry

    registry.from_label(args.persona)  # an unknown persona or label is one line before the engine is imported
    argv = ["--persona", args.persona, "--seed", str(args.seed), "--out-dir", args.out_dir]
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    argv += ["--max-iters", str(args.max_iters)] if args.max_iters is not None else []
    argv += ["--no-progress"] if args.no_progress else []
    argv += ["--threads", str(args.threads)] if args.threads is not None else []
    argv += ["--set", *args.set] if args.set else []
    argv += ["--resume", args.resume] if args.resume else []
    if args.engine == "jax":
        if args.device not in (None, "cpu"):
            print("error: the JAX loop runs on the CPU; --device applies to the torch engine", file=sys.stderr)
            return 2
        if args.threads is not None or args.set or args.resume:
            print("error: --threads, --set and --resume apply to the torch engine", file=sys.stderr)
            return 2
        from jaxmodel.train import main as jax_main

        return jax_main(argv)
    import train_mps

    argv += ["--device", args.device] if args.device else []
    return train_mps.main(argv)


def _anatomy(args) -> int:
    """Attention maps of every layer and head, and the logit lens, of a persona's model on a text."""
    from pathlib import Path

    import torch

    from dreamteam import data, registry
    from dreamteam.tools import drawings
    from torchport.anatomy import trace
    from torchport.checkpoint import load_checkpoint
    from torchport.model import GPT

    persona = registry.get(args.persona)
    ids = data.encode(args.text)[: persona.model.block_size]
    if not ids:
        print("error: --text encodes to no tokens", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    counts = None
    if persona.model.has("good_turing_prior"):  # the output bias starts from train.bin's token statistics
        import os

        import numpy as np

        counts = (np.ones(persona.model.vocab_size, np.int64) if args.checkpoint  # the checkpoint holds the bias
                  else data.token_counts(data.load(None, dict(os.environ)).train, persona.model.vocab_size))
    stats = None
    if persona.model.has("ngram_memory"):  # the head_mixture's n-gram tables come from train.bin's counts
        import os

        from dreamteam.components import ngram_memory

        stats = ngram_memory.stats_for(persona.model, data.load(None, dict(os.environ)).train)
    model = GPT(persona.model, token_counts=counts, ngram_stats=stats)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, persona.name)
        source = Path(args.checkpoint).name
    else:
        source = f"untrained (seed {args.seed}): pass --checkpoint runs/<run>.safetensors for a trained model"
        print(f"note: {source}")
    out = trace(model, torch.tensor([ids]))
    tokens = [data.decode([i]) for i in ids]
    # beside the checkpoint it reads (never the committed docs/ unless asked), else ./anatomy
    out_dir = Path(args.out) if args.out else (Path(args.checkpoint).parent if args.checkpoint else Path("anatomy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    a = drawings.draw_attention(out["attention"][:, 0].numpy(), tokens, out_dir / f"{persona.name}_attention.png",
                                f"{persona.name}: attention per layer and head ({source})")
    b = drawings.draw_logit_lens(out["lens_logits"][:, 0].numpy(), tokens, data.decode, out_dir / f"{persona.name}_logit_lens.png",
                                 f"{persona.name}: logit lens, top next token after each layer ({source})")
    print(f"wrote {a} and {b}")
    return 0


class SampleError(arguments.CommandError):
    """sample: no checkpoint to load, or options that do not fit."""


def newest_checkpoint(persona: str, runs_dir) -> "Path":
    """The checkpoint of the newest successful run record of `persona` under runs_dir (searched recursively)."""
    import json
    from pathlib import Path

    found = []
    for path in Path(runs_dir).rglob("*.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or rec.get("persona") != persona or rec.get("status") != "ok" or not rec.get("checkpoint"):
            continue
        ckpt = path.parent / rec["checkpoint"]
        if ckpt.exists():
            found.append((path.stat().st_mtime, str(path), ckpt))
    if not found:
        raise SampleError(f"no checkpoint of persona {persona!r} under {runs_dir!s} (a run record with status ok and "
                          f"its .safetensors beside it); train one or pass --checkpoint FILE.safetensors")
    return max(found)[2]


def _sample(args) -> int:
    """Decoded text sampled from a trained model after a prompt, with the uniform numbers of a seeded generator."""
    import numpy as np
    import torch

    from dreamteam import data, registry
    from torchport.checkpoint import load_checkpoint
    from torchport.model import GPT
    from torchport.sampling import generate

    persona = registry.get(args.persona)
    if args.tokens < 1:
        raise SampleError(f"--tokens {args.tokens}: expected at least 1")
    ckpt = args.checkpoint or newest_checkpoint(persona.name, args.runs)
    ids = data.encode(args.prompt)
    if not ids:
        raise SampleError("--prompt encodes to no tokens")
    counts = stats = None
    if persona.model.has("adaptive_softmax"):  # its clusters are built from the train.bin counts
        counts = data.token_counts(data.load(args.data_dir, os.environ).train, persona.model.vocab_size)
    if persona.model.has("ngram_memory"):  # the head_mixture's n-gram tables too (they are not in the checkpoint)
        from dreamteam.components import ngram_memory

        stats = ngram_memory.stats_for(persona.model, data.load(args.data_dir, os.environ).train)
    model = GPT(persona.model, token_counts=counts, ngram_stats=stats)
    load_checkpoint(model, ckpt, persona.name)
    u = np.random.default_rng(args.seed).random((args.tokens, 1))
    out = generate(model, torch.tensor([ids]), torch.from_numpy(u), args.sampler, temperature=args.temperature,
                   p_min=args.p_min, tau=args.tau, top_k=args.top_k)
    print(f"# {persona.name}, {ckpt}, sampler {args.sampler}, seed {args.seed}", file=sys.stderr)
    print(data.decode(out[0].tolist()))
    return 0


# Commands of one component, beside it: name -> "module:function(args) -> exit status", imported when the
# command runs. Their arguments are checked here (build_parser) like every command's; bad input the function
# finds itself is one arguments.CommandError line.
COMPONENT_COMMANDS = {
    "export-int8": "torchport.fixed_point_qat_export:export_int8_command",  # fixed_point_qat
    "laplace-rates": "torchport.laplace_bias_rates:laplace_rates_command",  # laplace_bias
    "expert-load": "torchport.moe_mlp_load:expert_load_command",  # moe_mlp
}


def component_command(name: str):
    """The function `name` of COMPONENT_COMMANDS, imported now."""
    import importlib

    module, _, function = COMPONENT_COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def _run_component_command(args) -> int:
    return component_command(args.command)(args)


def _personas(args) -> int:
    from dreamteam import registry
    from dreamteam.components import COMPONENTS

    for name, p in sorted(registry.PERSONAS.items()):
        # a component from another persona's theme (a combination such as the search's winner) names its persona
        parts = [c if COMPONENTS[c].persona == name else f"{c} ({COMPONENTS[c].persona})" for c in p.model.components]
        print(f"{name:<22} components: {', '.join(parts) or '-':<40} {p.description}")
    return 0


def _bench(args) -> int:
    from dreamteam.tools import bench

    return bench.main(args)


def _report(args) -> int:
    from dreamteam.tools import report

    return report.main(args)


def _evaluate_options(p) -> None:
    p.add_argument("dir", help="the candidate folder: train_mps.py (and model.py), or genome.json")
    p.add_argument("--seed", type=arguments.seed, default=0, help="the run's seed")
    p.add_argument("--timeout", type=arguments.positive_float, default=120.0, metavar="MIN",
                   help="minutes before the run is killed (a failure)")
    p.add_argument("--device", type=arguments.device, default="cpu",
                   help="the device substituted for the candidate's device = 'mps'")
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--max-iters", type=arguments.positive_int, default=None,
                   help="tests and smoke runs only, not a protocol evaluation (default: the protocol's 10001)")
    p.add_argument("--val-windows", type=arguments.positive_int, default=None,
                   help="tests only: val_loss on the first N windows (default: all 563)")
    p.add_argument("--no-hooks", action="store_true",
                   help="a bare run without the protocol monitor, to measure what its hooks cost (no dynamic check: never valid)")


DATA_DIR_HELP = ("folder of train.bin/val.bin (default: $DREAMTEAM_DATA, else ./data/shakespeare, else the tiny "
                 "Shakespeare shipped with the package, prepared once into ~/.cache/dreamteam/shakespeare)")


def _command(sub, name: str, help: str):
    """A subcommand whose --help names every option's default and whose errors are one line."""
    return sub.add_parser(name, help=help, description=help, formatter_class=arguments.HelpFormatter)


def _add_loop_commands(sub) -> None:
    """The candidate-evaluation loop (docs/loop.md): evaluate, check, propose, evolve."""
    from dreamteam.tools import evolve, harness, propose

    e = _command(sub, "evaluate", "run one candidate in a fresh subprocess; metrics and check report in DIR/metrics.json")
    _evaluate_options(e)
    e.set_defaults(func=harness.main_evaluate)

    c = _command(sub, "check", "does a candidate keep the frozen protocol? (static; dynamic from its evaluation)")
    _evaluate_options(c)
    c.add_argument("--run", action="store_true", help="evaluate now for the dynamic check (as dreamteam evaluate)")
    c.set_defaults(func=harness.main_check)

    p = _command(sub, "propose", "ask an LLM command for a modified train_mps.py/model.py; parse its answer")
    propose.add_arguments(p)
    p.set_defaults(func=propose.main)

    v = _command(sub, "evolve", "DreamTeam's evolutionary loop over registry genomes and persona proposals (resumable)")
    evolve.add_arguments(v)
    v.set_defaults(func=evolve.main)


def build_parser() -> argparse.ArgumentParser:
    ap = arguments.Parser(prog="dreamteam", description="DreamTeam persona models.",
                          formatter_class=arguments.HelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "prepare", "write train.bin/val.bin from a text (default: the tiny Shakespeare the package ships)")
    p.add_argument("--data-dir", default=None,
                   help="folder to write (default: $DREAMTEAM_DATA, else ./data/shakespeare)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", type=arguments.existing_file(kind="a text file"), default=None,
                        help="the text to encode (default: DATA_DIR/input.txt where it exists, else the shipped "
                             "tiny Shakespeare)")
    source.add_argument("--download", nargs="?", const=True, default=False, metavar="URL",
                        help=f"fetch the text from URL first (needs the network; URL default: {data_url()})")
    p.set_defaults(func=_prepare)

    t = _command(sub, "train", "train one persona under the frozen protocol")
    t.add_argument("--engine", choices=["torch", "jax"], default="torch", help="the PyTorch port or the Flax reference")
    from dreamteam.runs import add_run_options

    add_run_options(t)  # train_mps.py's own options, passed on
    t.set_defaults(func=_train)

    a = _command(sub, "anatomy", "draw attention maps and the logit lens of a model on a text")
    a.add_argument("--persona", default="baseline", help="a registered persona")
    a.add_argument("--text", required=True, help="the text to trace")
    a.add_argument("--checkpoint", type=arguments.existing_file(".safetensors", kind="a run's checkpoint"), default=None,
                   help="a run's .safetensors (default: untrained weights)")
    a.add_argument("--seed", type=arguments.seed, default=0, help="seed of the untrained weights")
    a.add_argument("--out", default=None,
                   help="folder of the two PNG files (default: the checkpoint's folder, else ./anatomy)")
    a.set_defaults(func=_anatomy)

    lr = _command(sub, "laplace-rates", "plot the learned decay rates of laplace_bias from a checkpoint")
    lr.add_argument("checkpoint", type=arguments.existing_file(".safetensors", kind="a run's checkpoint"),
                    help="a run's .safetensors (train_mps or jaxmodel.train)")
    lr.add_argument("--out", type=arguments.output_file(".png", kind="a PNG file"), default=None,
                    help="the plot to write (default: CHECKPOINT_laplace_rates.png beside the checkpoint)")
    lr.set_defaults(func=_run_component_command)

    _command(sub, "parity", "Flax/torch equivalence checks (python -m parity --help)")
    _command(sub, "personas", "list the registered personas").set_defaults(func=_personas)

    b = _command(sub, "bench", "multi-seed protocol runs of personas through train_mps.train (resumable)")
    b.add_argument("--personas", nargs="+", default=["baseline"], metavar="NAME", help="registered personas or variant labels")
    b.add_argument("--seeds", nargs="+", type=arguments.seed, default=[0, 1, 2], metavar="S", help="seeds of every persona")
    b.add_argument("--device", type=arguments.device_or_auto, default="auto",
                   help="auto is the protocol's mps, falling back to cuda, then cpu")
    b.add_argument("--out", default="runs", help="folder of run records; done runs found there are skipped")
    b.add_argument("--max-iters", type=arguments.positive_int, default=None,
                   help="smoke sweeps only; reported apart from full runs (default: the protocol's 10001)")
    b.add_argument("--ablate", default=None, metavar="NAME",
                   help="add NAME with each of its components removed in turn (default: no ablation)")
    b.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="recipe tuning: change Recipe/GPTConfig fields of every planned persona (labelled NAME@KEY=VALUE; "
                        "default: none)")
    b.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("--threads", type=arguments.positive_int, default=None, metavar="N",
                   help="torch threads of every run (default: torch's own, one per core; a local pool's share of the "
                        "cores with --workers); use 1 when sharing the machine")
    b.add_argument("--reuse-records", nargs="+", default=[], metavar="DIR",
                   help="folders of run records under other labels (a search's results/evolve/NAME): a planned run one of "
                        "them trained exactly (same config, recipe, seed, device kind, data, length) is copied in under its "
                        "label, not trained again (default: none)")
    executors.add_arguments(b, "(persona, seed) runs")
    b.set_defaults(func=_bench)

    r = _command(sub, "report", "RESULTS.md, results.json and plots from the run records")
    r.add_argument("runs", nargs="?", default="runs", help="folder of run records (read recursively)")
    r.add_argument("--out", default=None, help="folder to write (default: the runs folder itself)")
    r.add_argument("--speed", nargs="+", default=[], metavar="FILE",
                   help="add a speed section from benchmarks/bench_step.py --json files and run records (fast and "
                        "--eager; default: no speed section)")
    r.set_defaults(func=_report)

    _add_loop_commands(sub)
    e8 = _command(sub, "export-int8", "int8 weights + scales of a checkpoint's block matrices, and its val_loss change")
    e8.add_argument("checkpoint", type=arguments.existing_file(".safetensors", kind="a run's checkpoint"),
                    help="a run's .safetensors")
    e8.add_argument("--out", type=arguments.output_file(".safetensors", kind="a .safetensors file"), required=True,
                    help="the .safetensors file to write")
    e8.add_argument("--persona", default=None, help="default: the config in the run record CHECKPOINT.json")
    e8.add_argument("--bits", type=arguments.positive_int, default=8, help="bits of the codes, 2 to 8")
    e8.add_argument("--windows", type=arguments.positive_int, default=None,
                    help="evaluate the first N validation windows only (default: all 563)")
    e8.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    e8.set_defaults(func=_run_component_command)

    s = _command(sub, "sample", "print text sampled from a trained model after a prompt (GPT-2 BPE, offline)")
    s.add_argument("--persona", required=True, help="the persona the checkpoint was trained as")
    s.add_argument("--prompt", required=True, help="the text to continue")
    s.add_argument("--checkpoint", type=arguments.existing_file(".safetensors", kind="a run's checkpoint"), default=None,
                   help="a run's .safetensors (default: the newest of the persona under --runs)")
    s.add_argument("--runs", default="runs", help="folder of run records searched without --checkpoint")
    s.add_argument("--sampler", choices=["min_p", "typical", "top_k", "temperature"], default="min_p",
                   help="how the next token is drawn")
    s.add_argument("--p-min", type=arguments.fraction, default=0.1, help="min_p: keep p >= p_min * max p")
    s.add_argument("--tau", type=arguments.fraction, default=0.9, help="typical: mass to reach")
    s.add_argument("--top-k", type=arguments.positive_int, default=40, help="top_k: tokens kept")
    s.add_argument("--temperature", type=arguments.positive_float, default=1.0, help="divides the logits")
    s.add_argument("--seed", type=arguments.seed, default=0, help="seed of the uniform numbers of the draws")
    s.add_argument("--tokens", type=arguments.positive_int, default=100, help="new tokens to sample")
    s.add_argument("--data-dir", default=None, help="train.bin for adaptive_softmax's clusters; " + DATA_DIR_HELP)
    s.set_defaults(func=_sample)

    e = _command(sub, "expert-load", "plot moe_mlp's expert load over training from a run record")
    e.add_argument("record", type=arguments.existing_file(".json", kind="a run record"),
                   help="a run record (.json) of a persona with moe_mlp")
    e.add_argument("--out", type=arguments.output_file(".png", kind="a PNG file"), default=None,
                   help="the plot to write (default: RECORD_expert_load.png beside the record)")
    e.set_defaults(func=_run_component_command)
    return ap


def data_url() -> str:
    from dreamteam.data import INPUT_URL

    return INPUT_URL


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["parity"]:  # the parity module owns its arguments
        from parity.__main__ import main as parity_main

        try:
            return parity_main(argv[1:])
        except SystemExit as e:  # --help, or a bad argument (one line printed)
            return e.code

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad argument: one line already printed (2)
        return e.code
    from dreamteam.data import DataError
    from dreamteam.registry import UnknownPersonaError

    try:
        return args.func(args)
    except (DataError, UnknownPersonaError, arguments.CommandError, arguments.DeviceError, executors.ExecutorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
