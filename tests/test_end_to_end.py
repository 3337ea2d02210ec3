"""Train -> predict -> evaluate on generated tissue must find most cells of an unseen image."""

import pandas as pd

from impartial.cli import main

# The TissueNet setting (cells + nuclei tasks): the watershed's seeds are the predicted nuclei, so the cells
# found depend on what the network learnt. After this short training F1 at IoU 0.5 on the unseen image is
# about 0.8 (0.78-0.81 with 1 or 2 threads, in float32 or bfloat16); after 1 epoch it is 0.0.
MIN_F1 = 0.6
TRAINING = ["--preset", "quick", "--depth", "2", "--base", "8", "--epochs", "14", "--patch", "64",
            "--patches-per-epoch", "64", "--batch", "8", "--nsaves", "2", "--mcdrop", "2", "--tile", "128",
            "--overlap", "16", "--seed", "0"]


def test_training_on_scribbles_segments_an_unseen_image(tmp_path):
    data, run, table = tmp_path / "demo", tmp_path / "run", tmp_path / "scores.csv"
    assert main(["demo", "--out", str(data), "--images", "3", "--size", "128", "--fraction", "0.3",
                 "--tasks", "tissuenet"]) == 0
    assert main(["train", "--files", str(data / "files.csv"), "--out", str(run), "--tasks", "tissuenet",
                 *TRAINING]) == 0
    assert main(["evaluate", "--run", str(run), "--files", str(data / "files.csv"), "--group", "test",
                 "--csv", str(table)]) == 0
    scores = pd.read_csv(table).set_index("image")
    assert list(scores.index) == ["demo_2.tif", "mean"]
    assert scores.loc["mean", "f1"] >= MIN_F1, scores
