"""The `dreamteam` command line. Each command imports the engine it runs inside the command.

    dreamteam prepare  [--data-dir DIR] [--input PATH | --download]
    dreamteam train    [--engine torch|jax] [--persona NAME] [--seed S] [--max-iters N] [--device D] [--out-dir DIR]
                       [--threads N] [--set KEY=VALUE ...] [--resume RECORD.json]
    dreamteam parity   [--persona NAME ...] [--dtype ...] [--json PATH]     (same as python -m parity)
    dreamteam personas
    dreamteam bench    [--personas NAME ...] [--seeds S ...] [--device auto|D] [--out DIR] [--max-iters N] [--ablate NAME] [--set KEY=VALUE ...]
                       [--threads N]
    dreamteam report   [RUNS_DIR] [--out DIR] [--speed FILE ...]
    dreamteam evaluate DIR [--seed S] [--timeout MIN] [--device D] [--data-dir DIR]
    dreamteam check    DIR [--run ...]
    dreamteam propose  --persona-prompt FILE --from DIR --out DIR2 [--llm-command CMD]
    dreamteam evolve   --generations G --population P --out DIR [--llm-command CMD --persona-prompts DIR] [--executor local|ray]
    dreamteam export-int8 CHECKPOINT.safetensors --out FILE [--persona NAME] [--bits B] [--windows N]
    dreamteam laplace-rates CHECKPOINT [--out PNG]     (the learned decay rates of laplace_bias)
    dreamteam expert-load RECORD.json [--out PNG]
    dreamteam sample   --persona NAME --prompt TEXT [--checkpoint FILE.safetensors | --runs DIR]
                       [--sampler min_p|typical|top_k|temperature] [--seed S] [--tokens N]
"""

from __future__ import annotations

import argparse
import os
import sys


def _prepare(args) -> int:
    from dreamteam import data

    d = data.resolve_data_dir(args.data_dir, os.environ)
    info = data.prepare(d, args.input, download=args.download)
    print(f"wrote {d}/train.bin ({info['train_tokens']:,} tokens) and {d}/val.bin ({info['val_tokens']:,} tokens)")
    return 0


def _train(args) -> int:
    argv = ["--persona", args.persona, "--seed", str(args.seed), "--out-dir", args.out_dir]
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    argv += ["--max-iters", str(args.max_iters)] if args.max_iters else []
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

    from dreamteam import data, drawings, registry
    from torchport.anatomy import trace
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
    model = GPT(persona.model, token_counts=counts)
    if args.checkpoint:
        from safetensors.torch import load_model

        load_model(model, args.checkpoint)
        source = Path(args.checkpoint).name
    else:
        source = f"untrained (seed {args.seed}): pass --checkpoint runs/<run>.safetensors for a trained model"
        print(f"note: {source}")
    out = trace(model, torch.tensor([ids]))
    tokens = [data.decode([i]) for i in ids]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    a = drawings.draw_attention(out["attention"][:, 0].numpy(), tokens, out_dir / f"{persona.name}_attention.png",
                                f"{persona.name}: attention per layer and head ({source})")
    b = drawings.draw_logit_lens(out["lens_logits"][:, 0].numpy(), tokens, data.decode, out_dir / f"{persona.name}_logit_lens.png",
                                 f"{persona.name}: logit lens, top next token after each layer ({source})")
    print(f"wrote {a} and {b}")
    return 0


def _config_of_checkpoint(checkpoint, persona_name):
    """The GPTConfig of a run checkpoint: the named persona's, else the one in its run record (NAME.json)."""
    import json
    from pathlib import Path

    from dreamteam import registry
    from dreamteam.config import GPTConfig

    if persona_name:
        return registry.get(persona_name).model
    record = Path(checkpoint).with_suffix(".json")
    if not record.exists():
        raise FileNotFoundError(f"no run record {record} beside the checkpoint; pass --persona NAME")
    fields = json.loads(record.read_text())["config"]
    return GPTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _export_int8(args) -> int:
    """fixed_point_qat's export: int8 codes + float32 scales of the block matrices, and the val_loss of the
    model rebuilt from them against the float checkpoint's."""
    from pathlib import Path

    import torch
    from safetensors.torch import load_model

    from dreamteam import data
    from torchport.evaluate import val_loss
    from torchport.fixed_point_qat import load_int8, save_int8
    from torchport.model import GPT

    try:
        config = _config_of_checkpoint(args.checkpoint, args.persona)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not 2 <= args.bits <= 8:
        print(f"error: --bits {args.bits}: an int8 export holds 2 to 8 bits", file=sys.stderr)
        return 2
    if config.has("fixed_point_qat") and config.fixed_point_qat_bits != args.bits:
        print(f"note: the model was trained with fixed_point_qat_bits={config.fixed_point_qat_bits}, exporting {args.bits}")
    model = GPT(config)
    load_model(model, args.checkpoint)
    save_int8(model, args.out, args.bits, extra_meta={"source": Path(args.checkpoint).name})
    # float: the checkpoint's weights read as they are (fixed_point_qat off); int8: the dequantized matrices,
    # read as they are (no second rounding); with fixed_point_qat the trained model's own forward equals int8's
    plain_config = config.replace(components=tuple(c for c in config.components if c != "fixed_point_qat"))
    float_model = GPT(plain_config)
    load_model(float_model, args.checkpoint)
    int8_model = GPT(plain_config)
    state, meta = load_int8(args.out)
    int8_model.load_state_dict(state)
    x, y = data.val_windows(data.load(args.data_dir, os.environ).val, config.block_size)
    if args.windows:
        x, y = x[: args.windows], y[: args.windows]
    float_loss, int8_loss = val_loss(float_model, x, y, "cpu"), val_loss(int8_model, x, y, "cpu")
    size_f, size_q = Path(args.checkpoint).stat().st_size, Path(args.out).stat().st_size
    import json

    n_q = sum(state[k].numel() for k in json.loads(meta["quantized"]))
    kind = "trained with fixed_point_qat" if config.has("fixed_point_qat") else "post-training quantization"
    print(f"wrote {args.out}: {size_q:,} bytes (float checkpoint {size_f:,} bytes); {n_q:,} block-matrix weights "
          f"as int{args.bits} ({kind}), embeddings and gains float32")
    print(f"val_loss over {len(x)} windows: float weights {float_loss:.6f}, int8 export {int8_loss:.6f}, "
          f"change {int8_loss - float_loss:+.6f}")
    if config.has("fixed_point_qat"):
        qat_loss = val_loss(model, x, y, "cpu")
        print(f"  the model's own fake-quantized forward: {qat_loss:.6f} (int8 export - QAT forward = {int8_loss - qat_loss:+.2e})")
    return 0


def _laplace_rates(args) -> int:
    """Plot the learned decay rates s_h of laplace_bias, per layer and head, from a run's checkpoint."""
    from pathlib import Path

    from dreamteam import drawings
    from dreamteam.config import GPTConfig
    from dreamteam.laplace_rates import initial_rates

    path = Path(args.checkpoint)
    if not path.is_file():
        print(f"error: no checkpoint at {path}", file=sys.stderr)
        return 2
    try:
        rates_LxH = drawings.laplace_rates_of(path)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    H = rates_LxH.shape[1]
    # the rates at initialization, with the default exponent, which the registered personas use
    initial_H = initial_rates(H, GPTConfig.laplace_bias_exponent)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    drawings.draw_laplace_rates(rates_LxH, out, f"laplace_bias decay rates of {path.name}", initial_H)
    for l, row in enumerate(rates_LxH):
        print(f"layer {l}: " + "  ".join(f"s_{h}={s:.4g}" for h, s in enumerate(row)))
    print(f"wrote {out}")
    return 0


class SampleError(ValueError):
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
    from safetensors.torch import load_model

    from dreamteam import data, registry
    from torchport.model import GPT
    from torchport.sampling import generate

    persona = registry.get(args.persona)
    if args.tokens < 1:
        raise SampleError(f"--tokens {args.tokens}: expected at least 1")
    ckpt = args.checkpoint or newest_checkpoint(persona.name, args.runs)
    ids = data.encode(args.prompt)
    if not ids:
        raise SampleError("--prompt encodes to no tokens")
    counts = None
    if persona.model.has("adaptive_softmax"):  # its clusters are built from the train.bin counts
        counts = data.token_counts(data.load(args.data_dir, os.environ).train, persona.model.vocab_size)
    model = GPT(persona.model, token_counts=counts)
    try:
        load_model(model, str(ckpt))
    except FileNotFoundError:
        raise SampleError(f"checkpoint {ckpt} does not exist") from None
    except RuntimeError as e:
        raise SampleError(f"checkpoint {ckpt} does not fit persona {persona.name!r}: {str(e).splitlines()[0]}") from None
    u = np.random.default_rng(args.seed).random((args.tokens, 1))
    out = generate(model, torch.tensor([ids]), torch.from_numpy(u), args.sampler, temperature=args.temperature,
                   p_min=args.p_min, tau=args.tau, top_k=args.top_k)
    print(f"# {persona.name}, {ckpt}, sampler {args.sampler}, seed {args.seed}", file=sys.stderr)
    print(data.decode(out[0].tolist()))
    return 0


def _expert_load(args) -> int:
    """The moe_mlp expert-load plot of a run record."""
    import json
    from pathlib import Path

    from dreamteam import drawings

    rec = json.loads(Path(args.record).read_text())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        drawings.draw_expert_load(rec.get("expert_load", []), out,
                                  f"{rec.get('persona')}: expert load over training (seed {rec.get('seed')}, {rec.get('device')}, "
                                  f"{rec.get('max_iters')} it)")
    except ValueError as e:
        raise SampleError(str(e)) from None
    print(f"wrote {out}")
    return 0


def _personas(args) -> int:
    from dreamteam import registry

    for name, p in sorted(registry.PERSONAS.items()):
        print(f"{name:<22} components: {', '.join(p.model.components) or '-':<40} {p.description}")
    return 0


def _bench(args) -> int:
    from dreamteam import bench

    return bench.main(args)


def _report(args) -> int:
    from dreamteam import report

    return report.main(args)


def _evaluate_options(p) -> None:
    p.add_argument("dir", help="the candidate folder: train_mps.py (and model.py), or genome.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0, metavar="MIN", help="minutes before the run is killed (a failure)")
    p.add_argument("--device", default="cpu", help="the device substituted for the candidate's device = 'mps' (default cpu)")
    p.add_argument("--data-dir", default=None, help="default: $DREAMTEAM_DATA, else ./data/shakespeare")
    p.add_argument("--max-iters", type=int, default=None, help="tests and smoke runs only: not a protocol evaluation")
    p.add_argument("--val-windows", type=int, default=None, help="tests only: val_loss on the first N windows")
    p.add_argument("--no-hooks", action="store_true",
                   help="a bare run without the protocol monitor, to measure what its hooks cost (no dynamic check: never valid)")


def _add_loop_commands(sub) -> None:
    """The candidate-evaluation loop (docs/loop.md): evaluate, check, propose, evolve."""
    from dreamteam import evolve, harness, propose

    e = sub.add_parser("evaluate", help="run one candidate in a fresh subprocess; metrics and check report in DIR/metrics.json")
    _evaluate_options(e)
    e.set_defaults(func=harness.main_evaluate)

    c = sub.add_parser("check", help="does a candidate keep the frozen protocol? (static; dynamic from its evaluation)")
    _evaluate_options(c)
    c.add_argument("--run", action="store_true", help="evaluate now for the dynamic check (as dreamteam evaluate)")
    c.set_defaults(func=harness.main_check)

    p = sub.add_parser("propose", help="ask an LLM command for a modified train_mps.py/model.py; parse its answer")
    propose.add_arguments(p)
    p.set_defaults(func=propose.main)

    v = sub.add_parser("evolve", help="DreamTeam's evolutionary loop over registry genomes and persona proposals (resumable)")
    evolve.add_arguments(v)
    v.set_defaults(func=evolve.main)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["parity"]:  # the parity module owns its arguments
        from parity.__main__ import main as parity_main

        return parity_main(argv[1:])

    ap = argparse.ArgumentParser(prog="dreamteam", description="DreamTeam persona models.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="write train.bin/val.bin from tiny Shakespeare's input.txt")
    p.add_argument("--data-dir", default=None, help="default: $DREAMTEAM_DATA, else ./data/shakespeare")
    p.add_argument("--input", default=None, help="path of input.txt (default: DATA_DIR/input.txt)")
    p.add_argument("--download", action="store_true", help="fetch the canonical input.txt when none is given (needs the network)")
    p.set_defaults(func=_prepare)

    t = sub.add_parser("train", help="train one persona under the frozen protocol")
    t.add_argument("--engine", choices=["torch", "jax"], default="torch")
    t.add_argument("--persona", default="baseline")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-dir", default=None)
    t.add_argument("--device", default=None)
    t.add_argument("--max-iters", type=int, default=None, help="smoke runs only")
    t.add_argument("--out-dir", default="runs")
    t.add_argument("--no-progress", action="store_true")
    from dreamteam.runs import add_run_options

    add_run_options(t)
    t.set_defaults(func=_train)

    a = sub.add_parser("anatomy", help="draw attention maps and the logit lens of a model on a text")
    a.add_argument("--persona", default="baseline")
    a.add_argument("--text", required=True)
    a.add_argument("--checkpoint", default=None, help="a run's .safetensors (default: untrained weights)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default="docs/anatomy")
    a.set_defaults(func=_anatomy)

    lr = sub.add_parser("laplace-rates", help="plot the learned decay rates of laplace_bias from a checkpoint")
    lr.add_argument("checkpoint", help="a run's .safetensors (train_mps or jaxmodel.train)")
    lr.add_argument("--out", default="docs/laplace_rates.png")
    lr.set_defaults(func=_laplace_rates)

    sub.add_parser("parity", help="Flax/torch equivalence checks (python -m parity --help)")
    sub.add_parser("personas", help="list the registered personas").set_defaults(func=_personas)

    b = sub.add_parser("bench", help="multi-seed protocol runs of personas through train_mps.train (resumable)")
    b.add_argument("--personas", nargs="+", default=["baseline"], metavar="NAME")
    b.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S")
    b.add_argument("--device", default="auto", help="auto: the protocol's mps, falling back to cuda, then cpu")
    b.add_argument("--out", default="runs", help="folder of run records; done runs found there are skipped")
    b.add_argument("--max-iters", type=int, default=None, help="smoke sweeps only; reported apart from full runs")
    b.add_argument("--ablate", default=None, metavar="NAME", help="add NAME with each of its components removed in turn")
    b.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe tuning: change Recipe/GPTConfig fields of every planned persona (labelled NAME@KEY=VALUE)")
    b.add_argument("--data-dir", default=None)
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads of every run (default: torch's own, one per core); use 1 when sharing the machine")
    b.set_defaults(func=_bench)

    r = sub.add_parser("report", help="RESULTS.md, results.json and plots from the run records")
    r.add_argument("runs", nargs="?", default="runs", help="folder of run records (read recursively)")
    r.add_argument("--out", default="docs")
    r.add_argument("--speed", nargs="+", default=[], metavar="FILE",
                   help="add a speed section from benchmarks/bench_step.py --json files and run records (fast and --eager)")
    r.set_defaults(func=_report)

    _add_loop_commands(sub)
    e8 = sub.add_parser("export-int8", help="int8 weights + scales of a checkpoint's block matrices, and its val_loss change")
    e8.add_argument("checkpoint", help="a run's .safetensors")
    e8.add_argument("--out", required=True, help="the .safetensors file to write")
    e8.add_argument("--persona", default=None, help="default: the config in the run record CHECKPOINT.json")
    e8.add_argument("--bits", type=int, default=8)
    e8.add_argument("--windows", type=int, default=None, help="evaluate the first N validation windows only (default: all)")
    e8.add_argument("--data-dir", default=None)
    e8.set_defaults(func=_export_int8)

    s = sub.add_parser("sample", help="print text sampled from a trained model after a prompt (GPT-2 BPE, offline)")
    s.add_argument("--persona", required=True)
    s.add_argument("--prompt", required=True)
    s.add_argument("--checkpoint", default=None, help="a run's .safetensors (default: the newest under --runs)")
    s.add_argument("--runs", default="runs", help="folder of run records searched without --checkpoint")
    s.add_argument("--sampler", choices=["min_p", "typical", "top_k", "temperature"], default="min_p")
    s.add_argument("--p-min", type=float, default=0.1, help="min_p: keep p >= p_min * max p")
    s.add_argument("--tau", type=float, default=0.9, help="typical: mass to reach")
    s.add_argument("--top-k", type=int, default=40)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0, help="seed of the uniform numbers of the draws")
    s.add_argument("--tokens", type=int, default=100, help="new tokens to sample")
    s.add_argument("--data-dir", default=None, help="train.bin for adaptive_softmax's clusters (default: $DREAMTEAM_DATA)")
    s.set_defaults(func=_sample)

    e = sub.add_parser("expert-load", help="plot moe_mlp's expert load over training from a run record")
    e.add_argument("record", help="a run record (.json) of a persona with moe_mlp")
    e.add_argument("--out", default="docs/expert_load.png")
    e.set_defaults(func=_expert_load)

    args = ap.parse_args(argv)
    from dreamteam.data import DataError
    from dreamteam.registry import UnknownPersonaError

    try:
        return args.func(args)
    except (DataError, UnknownPersonaError, SampleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
