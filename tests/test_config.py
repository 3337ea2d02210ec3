"""The run config: presets, JSON round trip, validation messages."""

import json
import re
from typing import get_args

import pytest

from impartial.config import PRESETS, PresetName, RunConfig, TaskConfig, apply_overrides, preset_config
from impartial.errors import InputError


def test_output_channels_follow_the_method_layout():
    # vectra: task 0 K=4 with 1 rec channel -> 4 * 2 = 8; task 1 K=1+1+2=4 with 1 rec channel -> 8;
    # then the cell-core logit.
    config = preset_config("full", "vectra")
    assert [task.n_components for task in config.tasks] == [4, 4]
    assert config.n_task_outputs == config.n_outputs == 16
    config.separation = True
    assert config.n_outputs == 17
    # scribble maps: (1 class + bg) + (2 classes + bg)
    assert config.n_scribble_channels == 5
    assert config.class_names == ["cytoplasm", "nucleus_in_cytoplasm", "nucleus_out_of_cytoplasm"]


def test_tissuenet_and_default_tasks():
    assert preset_config("quick", "tissuenet").n_outputs == 4 * 3 + 3 * 2
    assert RunConfig().n_outputs == 4 * 3


def test_json_round_trip(tmp_path):
    config = preset_config("quick", "vectra")
    config.train.epochs = 7
    config.save(tmp_path / "config.json")
    loaded = RunConfig.load(tmp_path / "config.json")
    assert loaded == config
    assert isinstance(loaded.tasks[1], TaskConfig)


def test_a_run_saved_before_a_setting_existed_keeps_training_as_it_began(tmp_path):
    saved = preset_config("quick").to_dict()
    del saved["train"]["stain_strokes"]  # written before automatic stain strokes
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    assert RunConfig.load_run(path).train.stain_strokes == 0.0
    assert RunConfig.load(path).train.stain_strokes == preset_config("quick").train.stain_strokes > 0
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object") as error:
        RunConfig.load_run(path)
    assert str(path) in str(error.value)


def test_partial_dict_takes_defaults():
    config = RunConfig.from_dict({"train": {"epochs": 3}})
    assert config.train.epochs == 3 and config.train.lr == 5e-4


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"train": {"epoch": 3}}))
    with pytest.raises(InputError, match="unknown key.*epoch") as error:
        RunConfig.load(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("train.ratio", 1.5, "ratio"),
    ("train.patch", 100, "multiple of"),
    ("train.lr", 0.0, "lr"),
    ("model.dropout", 1.0, "dropout"),
    ("predict.overlap", 400, "overlap"),
])
def test_bad_values_are_rejected(setting, value, message):
    config = apply_overrides(preset_config("full"), {setting: value})
    with pytest.raises(InputError, match=message):
        config.validate()


def test_task_problems_are_reported():
    config = RunConfig(tasks=[TaskConfig(classes=["cell"], ncomponents=[2], rec_channels=[3])])
    with pytest.raises(InputError) as error:
        config.validate()
    assert "ncomponents" in str(error.value) and "rec_channels" in str(error.value)


def test_unknown_preset_and_override():
    with pytest.raises(InputError, match="unknown preset"):
        preset_config("fast")
    with pytest.raises(InputError, match="unknown setting"):
        apply_overrides(RunConfig(), {"train.speed": 1})


@pytest.mark.parametrize("overrides, problem", [
    ({"train.lr": float("inf")}, "train.lr must be finite"),
    ({"train.wrec": float("nan")}, "train.wrec must be finite"),
    ({"train.threads": -1}, "train.threads must be 0"),
    ({"train.seed": -1}, "train.seed must be non-negative"),
    ({"instances.threshold": float("nan")}, "instances.threshold must be finite"),
])
def test_non_finite_and_negative_settings_are_refused(overrides, problem):
    with pytest.raises(InputError, match=problem):
        preset_config("quick", **overrides)


@pytest.mark.parametrize("values, problem", [
    ({"train": {"lr": 1e999}}, "train.lr must be finite, got inf"),
    ({"train": {"epochs": "ten"}}, "'train.epochs' must be int, got 'ten'"),
    ({"train": {"epochs": 2.5}}, "'train.epochs' must be int, got 2.5"),
    ({"train": {"prior": 1}}, "'train.prior' must be bool, got 1"),
    ({"separation": "yes"}, "'config.separation' must be bool"),
    ({"train": {"precision": 16}}, "'train.precision' must be str, got 16"),
    ({"instances": {"seeds": ["core"]}}, "'instances.seeds' must be str, got ['core']"),
])
def test_a_config_file_with_wrong_types_or_infinite_values_gets_one_line(values, problem):
    with pytest.raises(InputError, match=re.escape(problem)):
        RunConfig.from_dict(values).validate()


def test_an_integer_learning_rate_in_a_config_file_is_a_number():
    assert RunConfig.from_dict({"train": {"lr": 1}}).validate().train.lr == 1


@pytest.mark.parametrize("values, problem", [
    ({"train": {"precision": "float16"}}, "train.precision must be one of auto, float32, bfloat16"),
    ({"train": {"rec_loss": "laplace"}}, "train.rec_loss must be 'gaussian' or 'mixture'"),
    ({"instances": {"method": "stardist"}}, "instances.method must be 'watershed' or 'threshold'"),
    ({"instances": {"seeds": "peaks"}}, "instances.seeds must be one of core, nuclei"),
    ({"preset": "fast"}, "preset must be one of quick, full"),
])
def test_a_choice_outside_its_names_is_refused(values, problem):
    with pytest.raises(InputError, match=re.escape(problem)):
        RunConfig.from_dict(values).validate()


def test_every_preset_name_has_a_preset():
    assert set(get_args(PresetName)) == set(PRESETS)
    for name in get_args(PresetName):
        assert preset_config(name).preset == name
