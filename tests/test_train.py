"""The trainer: run folder, events, stop and resume, repeatability, fine-tuning, bad input, and the
schedules (cycles, patience, best checkpoints, time budgets) checked by hand on scripted losses."""

import dataclasses
import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import impartial.train as train_module
from factories import scribbled_images, tiny_config
from impartial.device import pick_device
from impartial.errors import InputError
from impartial.predict import predict_image
from impartial.runs import PROCESS_ID, Run, read_status, write_status
from impartial.train import LR_FLOOR, Trainer, TrainingEvent


def _train(config, dataset, run_dir, **kwargs):
    events = []
    run = Trainer(config, dataset, run_dir, on_event=events.append, **kwargs).run()
    return run, events


def _with(config, **train):
    """``config`` with some training settings replaced."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


def _cosine(spent):
    """The learning-rate factor a budgeted cycle uses once ``spent`` (0..1) of its share has passed."""
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * spent))


class _Scripted:
    """Training with a fake clock and scripted validation losses, so a schedule can be checked by hand.

    Every trained epoch takes exactly ``epoch_s`` seconds of the fake clock (a stop and its resume take
    none unless the test moves ``now``); the n-th trained epoch's validation loss is ``losses[n - 1]``.
    For each trained epoch it records the weights as validated, the optimiser's step count when the epoch
    began, and the checkpoint files written; :meth:`by_epoch` files them under the epochs' numbers.
    """

    def __init__(self, monkeypatch, losses, epoch_s=1.0):
        self.now, self.losses, self.events = 1000.0, list(losses), []
        self.weights, self.steps_before, self.checkpoints = [], [], []  # per trained epoch, in order
        monkeypatch.setattr(train_module, "time", SimpleNamespace(monotonic=lambda: self.now))
        train_epoch, atomic_path = Trainer._train_epoch, train_module.atomic_path

        def timed_epoch(trainer, model, optimizer, sampler, generator):
            steps = _adam_steps(optimizer)
            losses = train_epoch(trainer, model, optimizer, sampler, generator)
            if losses is not None:  # not stopped
                self.steps_before.append(steps)
                self.now += epoch_s
            return losses

        def scripted_validation(trainer, model, validation):
            self.weights.append({key: value.clone() for key, value in model.state_dict().items()})
            return self.losses[len(self.weights) - 1]

        def recorded_write(target):
            if target.name.startswith("cycle_"):  # the checkpoint of the epoch validated last
                self.checkpoints.append((len(self.weights), target.name))
            return atomic_path(target)

        monkeypatch.setattr(Trainer, "_train_epoch", timed_epoch)
        monkeypatch.setattr(Trainer, "_validate", scripted_validation)
        monkeypatch.setattr(train_module, "atomic_path", recorded_write)

    def train(self, config, dataset, run_dir, **kwargs):
        return Trainer(config, dataset, run_dir, on_event=self.events.append, **kwargs).run()

    def epoch_events(self):
        return [event for event in self.events if event.kind == "epoch"]

    def by_epoch(self, run):
        """The records under the epoch numbers of the run's history (which skips ahead after patience)."""
        numbers = list(run.history.epoch)
        return SimpleNamespace(weights=dict(zip(numbers, self.weights, strict=True)),
                               steps_before=dict(zip(numbers, self.steps_before, strict=True)),
                               checkpoints=[(numbers[trained - 1], name) for trained, name in self.checkpoints])


def _adam_steps(optimizer):
    """Optimisation steps this Adam has taken (0 for a new one)."""
    return int(next(iter(optimizer.state.values()))["step"]) if optimizer.state else 0


def _same_weights(first, second):
    return all(torch.equal(first[key], second[key]) for key in first)


def _checkpoint(run, cycle):
    return torch.load(run.dir / "checkpoints" / f"cycle_{cycle}.pt", weights_only=True)


def test_run_folder_and_events(small_dataset, tmp_path):
    config, dataset = small_dataset
    run, events = _train(config, dataset, tmp_path / "run", preview_image=dataset[0].image)
    kinds = [event.kind for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 3 and kinds.count("preview") == 3
    preview = next(event.preview for event in events if event.kind == "preview")
    assert preview.tasks[0].class_segmentation.shape == (1, 96, 96)
    for name in ("config.json", "history.csv", "status.json", "thresholds.json", "state.pt", "preview.npz"):
        assert (run.dir / name).exists(), name
    assert run.status["state"] == "done"
    assert len(run.checkpoints) == 1
    history = run.history
    assert list(history.epoch) == [1, 2, 3]
    assert np.isfinite(history[["scribble", "rec", "total", "val"]].to_numpy(float)).all()
    assert set(run.thresholds) == {"threshold", "nucleus_threshold", "membrane_fills_cells",
                                   "cells_show_stain"}
    assert 0 < run.thresholds["threshold"] < 1


def test_a_run_with_the_gap_weight_learns_from_the_gap_map_too(small_dataset, tmp_path, monkeypatch):
    # The loss gets the scribbles plus one map: the background strokes between two cell strokes.
    config, dataset = small_dataset
    seen = []
    original = train_module.total_loss
    monkeypatch.setattr(train_module, "total_loss", lambda *args: seen.append(args[3].shape[1]) or original(*args))
    run, _ = _train(_with(config, wgap=0.5, epochs=1), dataset, tmp_path / "gap")
    assert run.status["state"] == "done" and np.isfinite(run.history["total"]).all()
    assert set(seen) == {config.n_scribble_channels + 1}


def test_event_kinds_and_run_states_outside_their_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown training event 'checkpoint'"):
        TrainingEvent(kind="checkpoint")
    with pytest.raises(ValueError, match="unknown run state 'finished'"):
        write_status(tmp_path, "finished")
    assert not (tmp_path / "status.json").exists()


def test_bfloat16_training_runs_and_says_so(small_dataset, tmp_path):
    config, dataset = small_dataset
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision="bfloat16"))
    run, events = _train(config, dataset, tmp_path / "run")
    assert events[0].message.endswith(" in bfloat16")
    assert run.status["state"] == "done"
    assert np.isfinite(run.history[["scribble", "rec", "total", "val"]].to_numpy(float)).all()


def test_same_seed_repeats_the_run(small_dataset, tmp_path):
    config, dataset = small_dataset
    first, _ = _train(config, dataset, tmp_path / "a")
    second, _ = _train(config, dataset, tmp_path / "b")
    columns = ["scribble", "rec", "total", "val"]
    # The CPU repeats a run exactly. CUDA's convolution kernels sum in a varying order (in bfloat16 where the card
    # computes it), so there the same seed repeats the run closely, not bit for bit.
    tolerance = 1e-7 if pick_device(config.train.device).type == "cpu" else 5e-2
    np.testing.assert_allclose(first.history[columns].to_numpy(float), second.history[columns].to_numpy(float),
                               rtol=tolerance)


def test_stop_then_resume_continues_where_it_stopped(small_dataset, tmp_path):
    config, dataset = small_dataset
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=4, nsaves=2))
    run_dir = tmp_path / "run"
    trainer = None

    def stop_after_second_epoch(event):
        if event.kind == "epoch" and event.epoch == 2:
            trainer.request_stop()

    trainer = Trainer(config, dataset, run_dir, on_event=stop_after_second_epoch)
    stopped = trainer.run()
    assert stopped.status["state"] == "stopped"
    assert list(stopped.history.epoch) == [1, 2]

    resumed, events = _train(config, dataset, run_dir)
    assert resumed.status["state"] == "done"
    assert [event.epoch for event in events if event.kind == "epoch"] == [3, 4]
    assert list(resumed.history.epoch) == [1, 2, 3, 4]
    assert len(resumed.checkpoints) == 2  # one per ensemble cycle


def test_interrupted_run_reads_as_interrupted(small_dataset, tmp_path):
    config, dataset = small_dataset
    run, _ = _train(config, dataset, tmp_path / "run")
    status = json.loads((run.dir / "status.json").read_text())
    status.update(state="running", pid=2 ** 22 + 12345)  # a process that does not exist
    (run.dir / "status.json").write_text(json.dumps(status))
    assert read_status(run.dir)["state"] == "interrupted"


def test_a_run_left_running_by_an_earlier_process_with_the_same_pid_reads_as_interrupted(small_dataset, tmp_path):
    # a server restarted in a container is pid 1 again: the pid alone cannot tell the old process from this one
    config, dataset = small_dataset
    run, _ = _train(config, dataset, tmp_path / "run")
    status = json.loads((run.dir / "status.json").read_text())
    status.update(state="running", process="an earlier server process")
    assert status["pid"] == os.getpid()
    (run.dir / "status.json").write_text(json.dumps(status))
    assert read_status(run.dir)["state"] == "interrupted"
    status.update(process=PROCESS_ID)  # this process's own running run is alive
    (run.dir / "status.json").write_text(json.dumps(status))
    assert read_status(run.dir)["state"] == "running"


def test_time_budget_ends_the_run(small_dataset, tmp_path):
    config, dataset = small_dataset
    config.train.max_minutes = 1e-6
    run, _ = _train(config, dataset, tmp_path / "run")
    assert run.status["state"] == "done" and "time budget" in run.status["message"]
    assert len(run.history) == 1


def test_without_a_budget_each_cycle_keeps_its_best_epoch_and_patience_ends_it(small_dataset, tmp_path,
                                                                               monkeypatch):
    config, dataset = small_dataset
    config = _with(config, epochs=12, nsaves=2, patience=2)  # two cycles of 6 epochs
    # cycle 0: best at epoch 2, then 2 epochs without improvement; cycle 1 (epochs 7-12): best at epoch 10
    scripted = _Scripted(monkeypatch, losses=[5, 4, 6, 7] + [3, 2.5, 4, 2, 2.2, 2.1])
    run = scripted.train(config, dataset, tmp_path / "run")
    history, recorded = run.history, scripted.by_epoch(run)
    # patience ends cycle 0 after epoch 4; the epoch counter jumps to the next cycle's first epoch, 7
    assert list(history.epoch) == [1, 2, 3, 4, 7, 8, 9, 10, 11, 12]
    assert list(history.cycle) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    # a checkpoint is written only when the cycle's validation loss improves
    assert recorded.checkpoints == [(1, "cycle_0.pt"), (2, "cycle_0.pt"), (7, "cycle_1.pt"), (8, "cycle_1.pt"),
                                    (10, "cycle_1.pt")]
    # each cycle keeps the weights of its best epoch, not of its last
    assert _same_weights(_checkpoint(run, 0), recorded.weights[2])
    assert not _same_weights(_checkpoint(run, 0), recorded.weights[4])
    assert _same_weights(_checkpoint(run, 1), recorded.weights[10])
    assert not _same_weights(_checkpoint(run, 1), recorded.weights[12])
    # 2 Adam steps per epoch (16 patches in batches of 8); a new optimiser at the start of cycle 1
    assert list(recorded.steps_before.values()) == [0, 2, 4, 6, 0, 2, 4, 6, 8, 10]
    assert list(history.lr) == [config.train.lr] * 10  # constant without a budget
    assert run.status["state"] == "done" and (run.status["epoch"], run.status["total_epochs"]) == (12, 12)


def test_patience_in_the_last_cycle_ends_the_run_at_the_last_epoch_not_past_it(small_dataset, tmp_path,
                                                                                monkeypatch):
    config, dataset = small_dataset
    config = _with(config, epochs=5, nsaves=1, patience=2)
    run = _Scripted(monkeypatch, losses=[3, 4, 5]).train(config, dataset, tmp_path / "run")
    assert list(run.history.epoch) == [1, 2, 3]
    assert (run.status["epoch"], run.status["total_epochs"]) == (5, 5)  # the bar shows 5 / 5, not more


def test_a_time_budget_trains_until_it_is_spent_whatever_the_epochs(small_dataset, tmp_path, monkeypatch):
    config, dataset = small_dataset
    config = _with(config, epochs=10 ** 6, nsaves=1, patience=2, max_minutes=0.05)  # 3 s
    scripted = _Scripted(monkeypatch, losses=[5.0] * 10, epoch_s=0.5)
    run = scripted.train(config, dataset, tmp_path / "budget")
    # 0.5 s per epoch: the sixth epoch reaches the 3 s budget and the run ends there, patience or not
    assert list(run.history.epoch) == [1, 2, 3, 4, 5, 6]
    assert run.status["state"] == "done" and "time budget" in run.status["message"]
    assert run.status["elapsed_s"] == 3.0 and run.status["total_epochs"] == 6 and run.status["budget_s"] == 3.0
    # the remaining time is the budget minus the time spent; the total is estimated from the pace
    start, epochs = scripted.events[0], scripted.epoch_events()
    assert (start.total_epochs, start.remaining_s, start.budget_s) == (0, 3.0, 3.0)  # 0: not known yet
    assert [event.remaining_s for event in epochs] == [2.5, 2.0, 1.5, 1.0, 0.5, 0.0]
    assert [event.total_epochs for event in epochs] == [6] * 6
    # the same losses without a budget: patience ends the only cycle after epoch 3
    unbudgeted = _with(config, max_minutes=0.0)
    assert len(_Scripted(monkeypatch, losses=[5.0] * 10).train(unbudgeted, dataset, tmp_path / "epochs").history) == 3


def test_a_cycle_that_stops_improving_leaves_its_time_to_the_next_and_the_last_runs_to_the_budget(
        small_dataset, tmp_path, monkeypatch):
    config, dataset = small_dataset
    config = _with(config, epochs=3, nsaves=3, patience=2, max_minutes=0.2)  # 12 s, 1 s per epoch
    scripted = _Scripted(monkeypatch, losses=[5, 6, 7] + [4, 3, 2, 1, 0.5] + [5, 6, 7, 8])
    run = scripted.train(config, dataset, tmp_path / "run")
    recorded = scripted.by_epoch(run)
    # cycle 0 gets 12 / 3 = 4 s and stops on patience after 3; cycle 1 gets (12 - 3) / 2 = 4.5 s, so it ends
    # after the epoch that passes 7.5 s (epoch 8); the last cycle gets the 4 s left and trains through them
    # although its losses stopped improving after epoch 9
    assert list(run.history.cycle) == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert run.status["elapsed_s"] == 12.0 and run.status["state"] == "done"
    assert recorded.checkpoints == [(1, "cycle_0.pt"), *[(epoch, "cycle_1.pt") for epoch in range(4, 9)],
                                    (9, "cycle_2.pt")]
    assert _same_weights(_checkpoint(run, 2), recorded.weights[9])
    assert [recorded.steps_before[epoch] for epoch in (1, 4, 9)] == [0, 0, 0]  # a new optimiser per cycle
    # the learning rate restarts at each cycle and follows a cosine over the cycle's share of the time
    lr = dict(zip(run.history.epoch, run.history.lr, strict=True))
    base = config.train.lr
    assert lr[1] == lr[4] == lr[9] == base
    assert lr[3] == pytest.approx(base * _cosine(2 / 4))  # cycle 0: 2 s of its 4 s spent
    assert lr[8] == pytest.approx(base * _cosine(4 / 4.5))
    assert lr[12] == pytest.approx(base * _cosine(3 / 4))


def test_a_budgeted_run_resumes_in_the_same_cycle_and_ends_at_the_same_budget(small_dataset, tmp_path,
                                                                              monkeypatch):
    config, dataset = small_dataset
    config = _with(config, nsaves=2, patience=10, max_minutes=0.1)  # 6 s: 3 s per cycle, 1 s per epoch
    scripted = _Scripted(monkeypatch, losses=[6, 5, 4, 3, 2, 1])
    trainer = None

    def stop_after_second_epoch(event):
        scripted.events.append(event)
        if event.kind == "epoch" and event.epoch == 2:
            trainer.request_stop()

    trainer = Trainer(config, dataset, tmp_path / "run", on_event=stop_after_second_epoch)
    assert trainer.run().status["state"] == "stopped"
    scripted.now += 1000.0  # the pause before the resume does not count
    resumed = scripted.train(config, dataset, tmp_path / "run")
    assert [event.epoch for event in scripted.epoch_events()] == [1, 2, 3, 4, 5, 6]
    # epoch 3 finishes cycle 0 with its cosine 2 s into the 3 s share; cycle 1 then gets the 3 s left
    assert list(resumed.history.cycle) == [0, 0, 0, 1, 1, 1]
    assert resumed.history.lr.iloc[2] == pytest.approx(config.train.lr * _cosine(2 / 3))
    assert resumed.status["state"] == "done" and resumed.status["elapsed_s"] == 6.0
    assert len(resumed.checkpoints) == 2


def test_a_state_file_from_before_budgets_resumes_in_its_cycle(small_dataset, tmp_path, monkeypatch):
    config, dataset = small_dataset
    config = _with(config, epochs=4, nsaves=2)
    scripted = _Scripted(monkeypatch, losses=[4, 3, 2, 1])
    run_dir, trainer = tmp_path / "run", None

    def stop_after_third_epoch(event):
        if event.kind == "epoch" and event.epoch == 3:
            trainer.request_stop()

    trainer = Trainer(config, dataset, run_dir, on_event=stop_after_third_epoch)
    trainer.run()
    state = torch.load(run_dir / "state.pt", weights_only=True)
    for added_with_budgets in ("cycle", "cycle_start_s", "cycle_end_s"):
        del state["progress"][added_with_budgets]
    torch.save(state, run_dir / "state.pt")
    resumed = scripted.train(config, dataset, run_dir)
    assert list(resumed.history.cycle) == [0, 0, 1, 1]  # the saved epoch 3 was in cycle 3 // 2 = 1
    assert scripted.by_epoch(resumed).checkpoints[-1] == (4, "cycle_1.pt")


def test_fine_tune_starts_from_the_earlier_weights(small_dataset, tmp_path):
    config, dataset = small_dataset
    earlier, _ = _train(config, dataset, tmp_path / "first")
    fresh, _ = _train(config, dataset, tmp_path / "fresh")
    tuned, _ = _train(config, dataset, tmp_path / "tuned", init_from=earlier.dir)
    # starting from trained weights, the first epoch's scribble loss is below a fresh start's
    assert tuned.history.scribble.iloc[0] < fresh.history.scribble.iloc[0]


def test_fine_tune_refuses_another_network(small_dataset, tmp_path):
    config, dataset = small_dataset
    earlier, _ = _train(config, dataset, tmp_path / "first")
    wider = dataclasses.replace(config, model=dataclasses.replace(config.model, base=12))
    with pytest.raises(InputError, match="cannot fine-tune"):
        Trainer(wider, dataset, tmp_path / "second", init_from=earlier.dir).run()


def test_no_scribbles_is_a_clear_error(small_dataset, tmp_path):
    config, dataset = small_dataset
    empty = [dataclasses.replace(item, scribbles=np.zeros_like(item.scribbles), val_mask=None) for item in dataset]
    with pytest.raises(InputError, match="no scribbles"):
        Trainer(config, empty, tmp_path / "run")


def test_wrong_channel_count_names_the_image(small_dataset, tmp_path):
    config, dataset = small_dataset
    one_channel = [dataclasses.replace(dataset[0], image=dataset[0].image[:1])]
    with pytest.raises(InputError, match="img1.*1 channel"):
        Trainer(config, one_channel, tmp_path / "run")


@pytest.mark.parametrize(("tasks", "scribble_maps", "class_names"), [
    ("vectra", 5, ["cytoplasm", "nucleus_in_cytoplasm", "nucleus_out_of_cytoplasm"]),
    ("tissuenet", 4, ["cell", "nucleus"]),
])
def test_multi_class_and_multi_task_settings_train_predict_and_segment(tasks, scribble_maps, class_names, tmp_path):
    from impartial.pipeline import segment

    config = tiny_config(tasks)
    (item,) = scribbled_images(config, seeds=(5,), fraction=0.6)
    # vectra: (cytoplasm, background), (nucleus in, nucleus out, background); tissuenet: 2 + 2 maps
    assert item.scribbles.shape == (96, 96, scribble_maps)
    run, _ = _train(config, [item], tmp_path / "run", preview_image=item.image)
    history = pd.read_csv(run.dir / "history.csv")
    assert len(history) == 3 and np.isfinite(history.total).all()
    assert Run.load(run.dir).config.class_names == class_names
    segmentation = segment(run, item.image)
    assert set(segmentation.prediction.class_probabilities()) == set(class_names)
    assert segmentation.cells.shape == (96, 96) and segmentation.nuclei is not None


def test_a_loss_that_becomes_infinite_fails_the_run_with_a_message(small_dataset, tmp_path):
    config, dataset = small_dataset
    config.train.lr = 1e30  # finite, but the first step throws the weights to infinity
    with pytest.raises(InputError, match="training diverged: the loss became .*lower the learning rate"):
        Trainer(config, dataset, tmp_path / "run").run()
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and "diverged" in status["message"]


@pytest.mark.parametrize("damaged, check", [
    ("checkpoints/cycle_0.pt", lambda run_dir: predict_image(Run.load(run_dir), np.zeros((2, 32, 32), np.float32))),
    ("thresholds.json", Run.load),
    ("history.csv", lambda run_dir: Run.load(run_dir).history),
])
def test_a_damaged_run_file_gives_one_line_naming_it(small_dataset, tmp_path, damaged, check):
    config, dataset = small_dataset
    run_dir = _train(config, dataset, tmp_path / "run")[0].dir
    path = run_dir / damaged
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3] + b"\x00garbage\xff")
    with pytest.raises(InputError) as error:
        check(run_dir)
    message = str(error.value)
    assert message.startswith(str(path)) and "damaged" in message
    assert "weights_only" not in message and "\n" not in message


def test_a_damaged_training_state_stops_the_resume_with_one_line(small_dataset, tmp_path):
    config, dataset = small_dataset
    trainer = None

    def stop_at_once(event):
        if event.kind == "epoch":
            trainer.request_stop()

    trainer = Trainer(config, dataset, tmp_path / "run", on_event=stop_at_once)
    trainer.run()
    (tmp_path / "run" / "state.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="state.pt: cannot load it: the file is damaged"):
        Trainer(config, dataset, tmp_path / "run").run()
