"""The compute device named in a manifest: parsed, and checked against this machine."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from xaibench.errors import UserError

_DEVICE = re.compile(r"^(cpu|cuda|mps)(:\d+)?$")


def check_device(name: str, where: str = "options.device") -> None:
    """A UserError when the name is malformed or this machine lacks the device.

    ``cpu`` is checked by its spelling alone, so `check` and a warm `run` of a CPU manifest never
    import torch (seconds); only an accelerator's availability needs torch to answer.
    """
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise UserError(f"{where}: unknown device {name!r}; use cpu, cuda or cuda:N")
    if name.startswith("cpu"):
        return
    resolve_device(name, where)


def resolve_device(name: str, where: str = "options.device") -> torch.device:
    """The torch device, or a UserError when the name is malformed or this machine lacks it."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{where}: unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{where}: {name!r} requested but no CUDA device is available; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{where}: {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{where}: {name!r} requested but MPS is not available here; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{where}: unsupported device {name!r}; use cpu, cuda or cuda:N")
    return device
