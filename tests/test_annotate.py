"""The Scribble page's numpy side: brushes, tiles, pictures sent to the canvas, edits checked and applied."""

import base64
import io

import numpy as np
from PIL import Image
from scipy import ndimage

from dashboard.annotate import (
    BrushCount,
    Overlay,
    Region,
    brushes_for,
    display_levels,
    overlay_layer,
    png_url,
    scribble_counts,
    scribble_layer,
    tile_for_view,
)
from dashboard.canvas import apply_edits
from impartial.config import tissuenet_tasks, whole_cell_tasks
from impartial.demo import create_demo_project
from impartial.scribbles import count_pieces


def test_brushes_follow_the_scribble_layout_and_have_keys():
    brushes = brushes_for(tissuenet_tasks())  # cells: [cell, background], nuclei: [nucleus, background]
    assert [(b.label, b.task, b.channel, b.key) for b in brushes] == [
        ("cell", 0, 0, "1"), ("nucleus", 1, 2, "2"), ("background (cells)", 0, 1, "3"),
        ("background (nuclei)", 1, 3, "4"), ("eraser", None, None, "e")]
    assert len({b.color for b in brushes}) == len(brushes)


def test_a_tile_is_the_view_with_a_margin_as_sharp_as_the_screen_needs():
    view = Region(top=100, left=200, height=100, width=200)
    tile, resolution = tile_for_view((1000, 1000), view, scale=4.0, max_side=1400, margin=0.1)
    assert tile == Region(90, 180, 120, 240) and resolution == 1.0  # zoomed in: full resolution, never above
    tile, resolution = tile_for_view((1000, 1000), Region(0, 0, 1000, 1000), scale=0.5, max_side=1400, margin=0.1)
    assert tile == Region(0, 0, 1000, 1000) and resolution == 0.5  # clipped to the image; as the screen shows it
    _, resolution = tile_for_view((4000, 4000), Region(0, 0, 4000, 4000), scale=0.9, max_side=1000)
    assert resolution == 0.25  # capped by the tile size


def test_display_levels_stretch_each_channel_between_its_percentiles():
    image = np.stack([np.array([[0.0, 0.5, 1.0]]), np.array([[0.0, 0.2, 0.4]])]).astype(np.float32)
    levels = display_levels(image, [[0.0, 100.0], [0.0, 50.0]])  # channel 2: its 50th percentile 0.2 is white
    assert levels.dtype == np.uint8 and levels.tolist() == [[[0, 128, 255]], [[0, 255, 255]]]


def test_thin_strokes_stay_visible_when_the_tile_is_smaller_than_the_image():
    brushes = brushes_for(whole_cell_tasks())
    scribbles = np.zeros((8, 8, 2), np.uint8)
    scribbles[5, :, 0] = 1  # a one-pixel line
    layer = scribble_layer(scribbles, brushes, (2, 2))  # 4 x 4 image pixels per tile pixel
    assert layer[..., 3].tolist() == [[0, 0], [255, 255]]
    assert layer[1, 0, :3].tolist() == [0xff, 0x30, 0x30]  # the cell colour


def test_overlay_draws_label_borders_opaque_and_a_heat_map_half_transparent():
    labels = np.zeros((6, 6), np.int32)
    labels[1:5, 1:5] = 1
    layer = overlay_layer(Overlay(outlines=[(labels, "#ffff00")]), Region(0, 0, 6, 6), (6, 6))
    assert (layer[..., 3] == 255).sum() == 12 and layer[2, 2, 3] == 0  # the 4 x 4 square's border ring
    layer = overlay_layer(Overlay(heat=np.ones((6, 6), np.float32)), Region(0, 0, 6, 6), (3, 3))
    assert layer.shape == (3, 3, 4) and (layer[..., 3] == 115).all()


def test_png_urls_decode_to_the_picture():
    picture = np.arange(12, dtype=np.uint8).reshape(3, 4)
    encoded = png_url(picture).removeprefix("data:image/png;base64,")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded)))), picture)


def test_counts_give_separate_strokes_and_pixels_per_brush():
    scribbles = np.zeros((6, 6, 2), np.uint8)
    scribbles[0, 0:3, 0] = 1
    scribbles[4, 2:4, 0] = 1
    scribbles[5, 5, 1] = 1
    counts = scribble_counts(scribbles, brushes_for(whole_cell_tasks()))
    assert counts == {"cell": BrushCount(2, 5), "background": BrushCount(1, 1)}
    labels = np.zeros((6, 6), np.int32)
    labels[0, 0:2], labels[0, 2:4], labels[4:6, 2:4] = 1, 2, 3  # the first stroke crosses cells 1 and 2
    counts = scribble_counts(scribbles, brushes_for(whole_cell_tasks()), labels)
    assert counts["cell"] == BrushCount(2, 5, 3) and counts["background"].cells == 0


def test_edits_from_the_browser_are_checked_applied_once_and_acknowledged(tmp_path):
    project = create_demo_project(tmp_path, n_images=1, size=32)
    name = project.images()[0]
    project.save_scribbles(name, np.zeros_like(project.load_scribbles(name)))
    brushes = brushes_for(project.tasks)
    stroke = {"op": "a", "kind": "stroke", "brush": 0, "width": 1, "points": [[3.5, 2.5], [3.5, 9.5]]}
    bad = [{"op": "b", "kind": "stroke", "brush": 7, "width": 1, "points": [[1, 1]]},
           {"op": "c", "kind": "stroke", "brush": 0, "width": 1, "points": [[1, "nan"]]},
           {"op": "d", "kind": "stroke", "brush": 0, "width": 1e9, "points": [[1, 1]]},
           {"op": "e", "kind": "format disk"}, "not an edit", {"kind": "undo"}]
    applied = set()
    handled, problems = apply_edits(project, name, [stroke, *bad], brushes, "ann", applied)
    assert handled == ["a", "b", "c", "d", "e"] and len(problems) == 4
    assert project.load_scribbles(name)[3, 2:10, 0].all() and project.load_scribbles(name).sum() == 8
    handled, problems = apply_edits(project, name, [stroke, {"op": "u", "kind": "undo"}], brushes, "ann", applied)
    assert handled == ["a", "u"] and not problems and not project.load_scribbles(name).any()
    apply_edits(project, name, [stroke, {"op": "u", "kind": "undo"}], brushes, "ann", applied)  # sent again
    assert not project.load_scribbles(name).any()


def test_pieces_are_counted_as_a_full_labelling_counts_them():
    rng = np.random.default_rng(0)
    mask = rng.random((203, 157)) > 0.93  # many small pieces, some touching diagonally, across block edges
    assert count_pieces(mask, block=8) == ndimage.label(mask, np.ones((3, 3), bool))[1]
    assert count_pieces(np.zeros((5, 5), bool)) == 0
