"""Where and in which precision the network runs: device choice, training slots, bfloat16 detection, autocast.

``train.device`` is ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``train.precision``
is ``"auto"`` (bfloat16 where the hardware computes it natively), ``"float32"`` or ``"bfloat16"``.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading

import torch

from .errors import InputError

BACKGROUND_NICENESS = 10  # the CPU priority of background work beside a server's pages (0 = normal, 19 = lowest)
_DEVICE_CHOICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device_choice(name: str) -> bool:
    """Whether ``name`` is a device setting: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    return _DEVICE_CHOICE.fullmatch(name) is not None


def pick_device(preference: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cuda"`` or ``"cuda:N"`` without that GPU raises InputError."""
    if not is_device_choice(preference):
        raise InputError(f"unknown device '{preference}' (choose auto, cuda, cuda:N or cpu)")
    if preference == "cpu":
        return torch.device("cpu")
    index = int(preference.split(":")[1]) if ":" in preference else 0
    if torch.cuda.is_available() and index < torch.cuda.device_count():
        return torch.device("cuda", index)
    if preference.startswith("cuda"):
        raise InputError(f"device '{preference}' was requested but there are {torch.cuda.device_count()} CUDA GPUs; "
                         "use 'auto' or 'cpu'")
    return torch.device("cpu")


def training_slots() -> int:
    """How many trainings may run at once: one per GPU, or one on the CPU."""
    return max(1, torch.cuda.device_count())


def slot_device(preference: str, slot: int) -> torch.device:
    """The device for a job in worker ``slot``: its own GPU when there are several and ``preference`` allows CUDA."""
    if preference in ("auto", "cuda") and torch.cuda.device_count() > 1:
        return pick_device(f"cuda:{slot % torch.cuda.device_count()}")
    return pick_device(preference)


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the network's convolutions for ``train.precision`` on ``device``.

    ``"auto"`` takes bfloat16 only where the hardware computes it natively (CPUs with AVX512-BF16 or AMX,
    CUDA GPUs that support it): there it trains about 1.5x faster on the CPU; elsewhere it would be emulated
    and slower, so float32 stays.
    """
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


def native_bfloat16(device: torch.device) -> bool:
    """True when ``device`` has bfloat16 arithmetic in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # torch.cpu's capability probes are private but stable since torch 2.1; missing ones mean "no"
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def autocast(device: torch.device, dtype: torch.dtype):
    """A context that runs convolutions in ``dtype`` (a no-op for float32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Run the calling thread, and the compute threads it starts later, at a lower CPU priority where the platform
    allows it (Linux sets priorities per thread). Background work on a dashboard server, a CPU training or the
    export writer, then leaves the cores to the pages of every open session, which would otherwise take seconds
    to draw."""
    with contextlib.suppress(OSError, AttributeError):  # not on every platform; only a matter of speed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
