"""Device choice, training slots and the precision of the convolutions."""

import os
import threading

import pytest
import torch

from impartial.config import preset_config
from impartial.device import (
    BACKGROUND_NICENESS,
    compute_dtype,
    is_device_choice,
    lower_thread_priority,
    native_bfloat16,
    pick_device,
    slot_device,
    training_slots,
)
from impartial.errors import InputError


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(InputError, match="there are 0 CUDA GPUs"):
        pick_device("cuda")


def test_precision_auto_takes_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    cpu = torch.device("cpu")
    assert compute_dtype("float32", cpu) == torch.float32 and compute_dtype("bfloat16", cpu) == torch.bfloat16
    for has_bf16 in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda has=has_bf16: has)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert native_bfloat16(cpu) is has_bf16
        assert compute_dtype("auto", cpu) == (torch.bfloat16 if has_bf16 else torch.float32)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the probe: no bfloat16
    assert compute_dtype("auto", cpu) == torch.float32


def test_one_training_slot_per_gpu_each_on_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert training_slots() == 2
    assert slot_device("auto", 1) == torch.device("cuda", 1)
    assert slot_device("cpu", 1) == torch.device("cpu")  # a run that asked for the CPU keeps it
    with pytest.raises(InputError, match="cuda:3"):
        pick_device("cuda:3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_slots() == 1 and slot_device("auto", 0) == torch.device("cpu")


def test_the_config_accepts_exactly_the_device_names_pick_device_knows():
    for name in ("auto", "cpu", "cuda", "cuda:1", "tpu", "cuda:", "gpu", "cuda:x", "CPU"):
        valid = name in ("auto", "cpu", "cuda", "cuda:1")
        assert is_device_choice(name) is valid
        if valid:
            preset_config("quick", **{"train.device": name}).validate()
        else:
            with pytest.raises(InputError, match="train.device must be"):
                preset_config("quick", **{"train.device": name})


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread priorities are a Linux feature")
def test_background_work_runs_at_a_lower_priority_and_the_caller_does_not():
    seen = {}

    def background() -> None:
        lower_thread_priority()
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=background)
    worker.start()
    worker.join()
    assert seen["thread"] >= BACKGROUND_NICENESS  # (a process already nicer than that stays so)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # only that thread
