"""What every command checks of its arguments before it starts: argparse types for counts, seeds, devices and
file kinds, a parser whose errors are one line, and a help formatter that names each option's default.

A bad value a user can type is one line naming the option and what was expected, and exit status 2, before
any work starts. Torch is imported only to check a device other than the CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TRAINING_DEVICE_TYPES = ("cpu", "cuda", "mps")


class DeviceError(ValueError):
    """A device that is not there, or that training does not run on; the message says what is there."""


class CommandError(ValueError):
    """Input a command finds unfit once it reads it (a file of another kind, options that do not go together);
    the command line prints the message as one line, exit 2. What the components' own commands raise
    (export-int8, laplace-rates, expert-load), so that they need nothing of the command line."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse's own print the whole usage first), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, where it has one that says something (not None, not an off flag)
    and its help text does not state it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False  # 0 == False: compare identity
                or action.default == argparse.SUPPRESS or action.required):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {default})" if text else f"default: {default}"


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """A count of iterations, tokens, windows, workers...: a whole number >= 1."""
    n = _integer(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: expected a whole number of at least 1")
    return n


def seed(text: str) -> int:
    """A random seed: a whole number >= 0 (numpy's generators take no negative seeds)."""
    n = _integer(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n}: a seed is a whole number of at least 0")
    return n


def positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: expected a finite number above 0")
    return x


def fraction(text: str) -> float:
    """A number in (0, 1] (a probability mass or ratio)."""
    x = positive_float(text)
    if x > 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a number in (0, 1]")
    return x


def available_devices() -> list[str]:
    """The devices of this machine that training runs on: cpu, every cuda:N, and mps where it is there."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(name: str) -> str:
    """`name` where training can run on it here; else one DeviceError naming what this machine has. The one
    check of a device name: the command line's and train_mps.resolve_device's.

    'mps' on a machine without MPS is not an error: train_mps.resolve_device says so in one line and falls
    back to CUDA, then the CPU, as the protocol's own default device does.
    """
    if name == "cpu":  # the common case needs no torch import
        return name
    import torch

    def there() -> str:
        return f"this machine has {', '.join(available_devices())}"

    kind, sep, index = str(name).partition(":")
    if kind not in TRAINING_DEVICE_TYPES or (sep and not index.isdigit()):
        try:
            other = torch.device(name).type  # a device torch knows (meta, xla, ...), not one training runs on
        except (RuntimeError, ValueError):
            raise DeviceError(f"unknown device {name!r}; expected one of cpu, cuda, cuda:N, mps; {there()}") from None
        raise DeviceError(f"device {name!r} ({other}): training runs on cpu, cuda, cuda:N or mps; {there()}")
    if kind == "cpu" and index not in ("", "0"):
        raise DeviceError(f"device {name!r} is not there; {there()}")
    if kind == "mps" and index not in ("", "0"):
        raise DeviceError(f"device {name!r}: MPS has one device, 'mps' or 'mps:0'; {there()}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but CUDA is not available on this machine; {there()}")
        n = torch.cuda.device_count()
        if index and int(index) >= n:
            raise DeviceError(f"device {name!r} requested but this machine has {n} CUDA device(s), "
                              f"cuda:0 to cuda:{n - 1}; {there()}")
    return name


def device(text: str) -> str:
    """argparse type: a device training can run on here (check_device)."""
    try:
        return check_device(text)
    except DeviceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def device_or_auto(text: str) -> str:
    """argparse type: 'auto' (the protocol's mps with its fallback) or a device as `device`."""
    return text if text == "auto" else device(text)


def existing_file(*suffixes: str, kind: str = "file"):
    """argparse type: the path of an existing file whose name ends in one of `suffixes` ('.safetensors')."""

    def check(text: str) -> str:
        path = Path(text)
        if suffixes and path.suffix not in suffixes:
            got = f"a {path.suffix} file" if path.suffix else "a name without an extension"
            raise argparse.ArgumentTypeError(f"{text}: expected {kind} ({' or '.join(suffixes)}), got {got}")
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{text}: no such file" if not path.exists() else f"{text}: not a file")
        return text

    check.__name__ = f"{kind} ({' or '.join(suffixes)})"  # argparse names the type in some messages
    return check


def output_file(*suffixes: str, kind: str = "file"):
    """argparse type: the path of a file to write, whose name ends in one of `suffixes` ('.png')."""

    def check(text: str) -> str:
        path = Path(text)
        if path.suffix not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: expected {kind} name ending in {' or '.join(suffixes)}")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; expected {kind} name")
        return text

    check.__name__ = f"{kind} ({' or '.join(suffixes)})"
    return check
