"""Atomic writes: npz archives round-trip without pickles and leave no temporary files."""

import numpy as np
import pytest

from impartial.storage import write_npz


@pytest.mark.parametrize("compress", [True, False])
def test_npz_round_trip_without_pickles(tmp_path, compress):
    arrays = {"scribble": np.eye(5, dtype=np.uint8), "val_mask": np.ones((5, 5), bool), "epoch": np.int64(3)}
    write_npz(tmp_path / "a.npz", compress=compress, **arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["epoch", "scribble", "val_mask"]
        for key, value in arrays.items():
            np.testing.assert_array_equal(archive[key], value)
            assert archive[key].dtype == np.asarray(value).dtype
    assert [path.name for path in tmp_path.iterdir()] == ["a.npz"]


def test_object_arrays_are_refused_and_the_old_file_stays(tmp_path):
    write_npz(tmp_path / "a.npz", scribble=np.zeros(3, np.uint8))
    with pytest.raises(ValueError):
        write_npz(tmp_path / "a.npz", scribble=np.array([{"x": 1}], dtype=object))
    with np.load(tmp_path / "a.npz", allow_pickle=False) as archive:
        assert archive["scribble"].tolist() == [0, 0, 0]
    assert [path.name for path in tmp_path.iterdir()] == ["a.npz"]
