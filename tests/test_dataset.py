"""files.csv: the list of a data set's images, scribbles, labels and groups."""

import pandas as pd
import pytest

from impartial.dataset import read_files_csv, write_files_csv
from impartial.errors import InputError


def test_files_csv_round_trip_with_relative_paths(tmp_path):
    for name in ("a.tif", "a_scribbles.npz", "a_labels.tif", "b.tif"):
        (tmp_path / "data" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_bytes(b"")
    data = tmp_path / "data"
    write_files_csv(tmp_path / "files.csv", [
        {"image": data / "a.tif", "scribbles": data / "a_scribbles.npz", "labels": data / "a_labels.tif"},
        {"image": data / "b.tif", "group": "test"},
    ])
    text = (tmp_path / "files.csv").read_text().splitlines()
    assert text[0] == "image,scribbles,labels,group,prefix,input_file,input_dir"
    assert text[1] == "data/a.tif,data/a_scribbles.npz,data/a_labels.tif,train,a,a.tif,data"
    table = read_files_csv(tmp_path / "files.csv")
    assert list(table["group"]) == ["train", "test"]
    assert table["image"][0] == str(data / "a.tif") and pd.isna(table["labels"][1]) and pd.isna(table["scribbles"][1])


@pytest.mark.parametrize("text, message", [
    ("scribbles\ns.npz\n", "needs an 'image' column"),
    ("image,scribbles\na.tif,s.npz\nmissing.tif,s.npz\n", "row 2: image file not found"),
    ("image,scribbles,group\na.tif,,train\n", "row 1: a training image needs a scribbles file"),
    ("image,scribbles,group\na.tif,s.npz,valid\n", "row 1: group 'valid'"),
])
def test_bad_files_csv(tmp_path, text, message):
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "s.npz").write_bytes(b"")
    (tmp_path / "files.csv").write_text(text)
    with pytest.raises(InputError, match=f"files.csv: {message}"):
        read_files_csv(tmp_path / "files.csv")


def test_files_csv_group_defaults_to_train(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "s.npz").write_bytes(b"")
    (tmp_path / "files.csv").write_text("image,scribbles\na.tif,s.npz\n")
    table = read_files_csv(tmp_path / "files.csv")
    assert list(table["group"]) == ["train"] and pd.isna(table["labels"][0])
