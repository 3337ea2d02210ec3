"""Where to scribble next: the signals, the spread-out choice of regions, and simulated strokes at a point."""

import numpy as np
import pytest

from impartial.demo import create_demo_project
from impartial.errors import InputError
from impartial.scribbles import strokes_at
from impartial.suggest import gain_maps, suggest_regions


def test_the_signals_by_hand():
    entropy = np.array([[0.2, 1.4]], np.float32)
    variance = np.array([[0.25, 0.01]], np.float32)  # std 0.5 (the most) and 0.1
    maps = gain_maps(entropy, variance, None)
    np.testing.assert_allclose(maps["uncertainty"], [[0.2, 1.0]])
    np.testing.assert_allclose(maps["disagreement"], [[1.0, 0.2]], rtol=1e-6)
    cells = np.zeros((4, 12), np.int32)
    cells[0, 0:2], cells[1, 0:2], cells[2, 0:2] = 1, 2, 3  # three cells of 2 px
    cells[:, 6:12] = 4  # one of 24 px: twelve times the median
    merged = gain_maps(np.zeros((4, 12), np.float32), None, cells)["unsure split"]
    assert merged[:, 6:].all() and not merged[:, :6].any() and "disagreement" not in gain_maps(entropy, None, None)


def test_regions_spread_over_the_image_and_skip_scribbled_done_and_skipped_ones():
    uncertainty = np.zeros((64, 64), np.float32)
    uncertainty[:32, :32] = 1.0  # a large uncertain patch ...
    uncertainty[48:56, 48:56] = 0.5  # ... and a smaller, weaker one far from it
    scribbles = np.zeros((64, 64, 2), np.uint8)
    picked = suggest_regions({"uncertainty": uncertainty}, scribbles, count=2, size=16, spacing=24)
    first, second = picked
    assert first.top <= 16 and first.left <= 16 and first.score == pytest.approx(1.0)  # inside the large patch
    assert first.reason == "uncertainty"
    assert 40 <= second.top <= 48 and 40 <= second.left <= 48  # the weaker one, not a second region of the first
    assert second.score == pytest.approx(0.125)
    scribbles[first.top + 3, first.left + 3, 0] = 1  # a stroke in the best region: it is left out
    again = suggest_regions({"uncertainty": uncertainty}, scribbles, count=1, size=16, spacing=24)
    assert again[0].key != first.key and again[0].score == pytest.approx(1.0)
    skipped = suggest_regions({"uncertainty": uncertainty}, scribbles, count=1, size=16, spacing=24,
                              skip=frozenset({again[0].key}))
    assert skipped[0].key != again[0].key
    assert suggest_regions({"uncertainty": np.zeros((64, 64), np.float32)}, scribbles, count=3, size=16) == []


def test_a_simulated_annotator_draws_inside_the_cell_or_on_the_background_at_the_point():
    cells = np.zeros((40, 40), np.int32)
    cells[5:20, 5:20] = 1
    cells[5:20, 20:35] = 2  # touching cell 1
    strokes = strokes_at(cells, [(12, 10), (32, 20)], length=6)
    cell_stroke, background_stroke = strokes[..., 0] > 0, strokes[..., 1] > 0
    assert cell_stroke.any() and set(np.unique(cells[cell_stroke])) == {1}
    assert background_stroke.any() and (cells[background_stroke] == 0).all()
    assert not strokes[:, :, 0][cells == 2].any()


def test_marked_suggestions_are_kept_per_image_and_go_with_the_image(tmp_path):
    project = create_demo_project(tmp_path, n_images=2, size=64)
    project.mark_suggestion("tissue_1", "0,0,32", "done")
    project.mark_suggestion("tissue_1", "16,32,32", "skipped")
    assert project.suggestion_states("tissue_1") == {"0,0,32": "done", "16,32,32": "skipped"}
    assert project.suggestion_states("tissue_2") == {}
    with pytest.raises(InputError, match="done or skipped"):
        project.mark_suggestion("tissue_1", "0,0,32", "maybe")
    project.delete_image("tissue_1")
    assert not (project.dir / "suggestions" / "tissue_1.json").exists()
