"""The Train page's preview: the probability over the image it was predicted on, with a colour bar."""

import numpy as np
from test_app import open_page

from impartial.project import Project
from impartial.runs import write_preview


def test_the_preview_is_shown_over_its_image_with_a_colour_bar(trained_root):
    root, run_id, _ = trained_root
    project = Project(root / "projects" / "demo")
    newest = project.runs()[0].dir
    probability = np.linspace(0, 1, 96 * 96, dtype=np.float32).reshape(1, 96, 96)
    write_preview(newest, 3, "tissue_1", {"class_segmentation": probability, "class_names": ["cell"],
                                          "entropy": np.zeros((1, 96, 96), np.float32)})
    app = open_page("3_Train.py", project="demo")
    assert not app.exception, app.exception
    captions = [caption for image in app.image for caption in image.captions]
    assert "Preview after epoch 3: probability of cell over tissue_1" in captions
    assert any("Colour bar: probability 0 (left) to 1 (right)" in element.value for element in app.caption)
