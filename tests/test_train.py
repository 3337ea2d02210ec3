"""The trainer: run folder, events, stop and resume, repeatability, fine-tuning, bad input."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from factories import scribbled_images, tiny_config
from impartial.errors import InputError
from impartial.runs import Run, read_status
from impartial.train import Trainer


def _train(config, dataset, run_dir, **kwargs):
    events = []
    run = Trainer(config, dataset, run_dir, on_event=events.append, **kwargs).run()
    return run, events


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
    assert set(run.thresholds) == {"threshold", "nucleus_threshold"}
    assert 0 < run.thresholds["threshold"] < 1


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
    np.testing.assert_allclose(first.history[columns].to_numpy(float), second.history[columns].to_numpy(float))


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


def test_time_budget_ends_the_run(small_dataset, tmp_path):
    config, dataset = small_dataset
    config.train.max_minutes = 1e-6
    run, _ = _train(config, dataset, tmp_path / "run")
    assert run.status["state"] == "done" and "time budget" in run.status["message"]
    assert len(run.history) == 1


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
