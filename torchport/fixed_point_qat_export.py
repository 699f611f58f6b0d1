"""`dreamteam export-int8`, fixed_point_qat's command: int8 codes + float32 scales of a checkpoint's block
matrices (fixed_point_qat.save_int8), and the val_loss of the model rebuilt from them against the float
checkpoint's. The command line (dreamteam/tools/cli.py) checks the arguments and calls `export_int8_command`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dreamteam.arguments import CommandError


def export_int8_command(args) -> int:
    """args: checkpoint, out, persona (None: the run record's config), bits, windows (None: all), data_dir."""
    from safetensors.torch import load_model

    from dreamteam import data
    from torchport.checkpoint import config_of_checkpoint, load_checkpoint
    from torchport.evaluate import val_loss
    from torchport.fixed_point_qat import load_int8, save_int8
    from torchport.model import GPT

    config = config_of_checkpoint(args.checkpoint, args.persona)
    if not 2 <= args.bits <= 8:
        raise CommandError(f"--bits {args.bits}: an int8 export holds 2 to 8 bits")
    if config.has("fixed_point_qat") and config.fixed_point_qat_bits != args.bits:
        print(f"note: the model was trained with fixed_point_qat_bits={config.fixed_point_qat_bits}, exporting {args.bits}")
    model = GPT(config)
    load_checkpoint(model, args.checkpoint, args.persona or "(the run record's config)")
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
