"""The device lock shared by the dashboard's jobs and command-line runs on one server."""

import subprocess
import sys
import textwrap
import threading

import torch

from impartial.devicelock import device_key, device_turn

CPU = torch.device("cpu")
WAIT_S = 30


def test_device_keys():
    assert device_key(CPU) == "cpu"
    assert device_key(torch.device("cuda")) == "cuda0"
    assert device_key(torch.device("cuda", 1)) == "cuda1"


def test_second_training_waits_for_the_first_and_learns_who_holds_the_device(tmp_path):
    events, first_holds, release = [], threading.Event(), threading.Event()

    def first():
        with device_turn(tmp_path, CPU, "train of demo by ann") as granted:
            events.append(("first", granted))
            first_holds.set()
            release.wait(WAIT_S)
        events.append(("first released", True))

    thread = threading.Thread(target=first)
    thread.start()
    assert first_holds.wait(WAIT_S)
    waits = []

    def on_wait(holder):
        waits.append(holder)
        release.set()  # the first training ends only once the second is seen waiting

    with device_turn(tmp_path, CPU, "train of demo by bob", on_wait=on_wait, poll_s=0.05) as granted:
        events.append(("second", granted))
    thread.join(WAIT_S)
    assert events == [("first", True), ("first released", True), ("second", True)]
    assert len(waits) == 1 and waits[0].startswith("train of demo by ann (started ")


def test_other_devices_do_not_wait(tmp_path):
    with device_turn(tmp_path, CPU, "on the CPU"), \
            device_turn(tmp_path, torch.device("cuda", 1), "on GPU 1", on_wait=lambda holder: 1 / 0) as granted:
        assert granted


def test_a_stop_while_waiting_gives_up(tmp_path):
    stop = threading.Event()
    with device_turn(tmp_path, CPU, "first"):
        with device_turn(tmp_path, CPU, "second", on_wait=lambda holder: stop.set(), stop_event=stop,
                         poll_s=0.05) as granted:
            assert not granted
    with device_turn(tmp_path, CPU, "third") as granted:  # nothing was left locked
        assert granted


def test_a_killed_holder_frees_the_device(tmp_path):
    holder = textwrap.dedent(f"""
        import time, torch
        from impartial.devicelock import device_turn
        with device_turn({str(tmp_path)!r}, torch.device("cpu"), "command-line run of demo"):
            print("holding", flush=True)
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "holding"
        waits = []

        def kill_holder(description):
            waits.append(description)
            process.kill()  # a crash: the operating system drops its lock

        with device_turn(tmp_path, CPU, "dashboard job", on_wait=kill_holder, poll_s=0.05) as granted:
            assert granted
        assert waits[0].startswith("command-line run of demo (started ")
    finally:
        process.kill()
        process.wait(WAIT_S)
