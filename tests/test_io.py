"""Reading images, labels, ROI zips and scribbles; every bad input names its file."""

import itertools
import tracemalloc
import zipfile

import numpy as np
import pytest
import roifile
import tifffile
from PIL import Image

from impartial.config import RunConfig, TaskConfig, vectra_tasks
from impartial.errors import InputError
from impartial.io import (
    import_samples,
    normalize_percentile,
    read_cellpose_folder,
    read_image,
    read_labels,
    read_roi_zip,
    read_scribbles,
    read_tissuenet_npz,
    write_image_tiff,
)
from impartial.storage import FILE_MODE, atomic_path, write_text


def _ramp(channels=2, height=5, width=6):
    """(C, H, W) float32 with a distinct value at every pixel of every channel."""
    return np.arange(channels * height * width, dtype=np.float32).reshape(channels, height, width)


def _roi_zip(path, polygons, roitype=roifile.ROI_TYPE.POLYGON):
    """Write an ImageJ ROI zip with one ROI per (x, y) polygon, in order."""
    with zipfile.ZipFile(path, "w") as archive:
        for index, points in enumerate(polygons, start=1):
            roi = roifile.ImagejRoi.frompoints(np.asarray(points), name=f"cell{index}")
            roi.roitype = roitype
            archive.writestr(f"cell{index}.roi", roi.tobytes())
    return path


# --- images ------------------------------------------------------------------------------------

def test_tiff_round_trip_as_imagej_hyperstack(tmp_path):
    image = _ramp()
    write_image_tiff(tmp_path / "a.tif", image)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "CYX"
    read = read_image(tmp_path / "a.tif", n_channels=2)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, image)


@pytest.mark.parametrize("axes, shape, order", [
    ("ZCYX", (1, 2, 5, 6), (0, 1, 2)),  # ImageJ hyperstack with one slice
    ("CYX", (2, 5, 6), (0, 1, 2)),
    ("TCYX", (1, 3, 5, 6), (0, 1, 2)),
])
def test_imagej_axes_with_singleton_z_and_t(tmp_path, axes, shape, order):
    pixels = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    tifffile.imwrite(tmp_path / "h.tif", pixels, imagej=True, metadata={"axes": axes})
    np.testing.assert_array_equal(read_image(tmp_path / "h.tif"), pixels.reshape(shape[-3:]))


def test_ome_tiff_and_rgb_tiff_and_plain_stack(tmp_path):
    stack = _ramp(3).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.ome.tif", stack[np.newaxis], metadata={"axes": "ZCYX"})
    np.testing.assert_array_equal(read_image(tmp_path / "a.ome.tif"), stack)
    rgb = np.moveaxis(stack, 0, -1).astype(np.uint8)  # (H, W, 3): axes YXS
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif"), np.moveaxis(rgb, -1, 0))
    tifffile.imwrite(tmp_path / "plain.tif", stack[:2])  # no axes metadata: 'QYX', the short axis is channels
    np.testing.assert_array_equal(read_image(tmp_path / "plain.tif"), stack[:2])


def test_z_stack_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", _ramp(6).reshape(3, 2, 5, 6), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match="z.tif.*ZCYX"):
        read_image(tmp_path / "z.tif")


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3), ("RGBA", 3)])
def test_png_channels(tmp_path, mode, channels):
    pixels = (np.arange(5 * 6 * len(mode)) % 251).astype(np.uint8).reshape(5, 6, len(mode))
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (channels, 5, 6)
    np.testing.assert_array_equal(image, np.moveaxis(pixels[..., :channels], -1, 0))


def test_npz_image_is_height_width_channels(tmp_path):
    image = _ramp()
    np.savez(tmp_path / "a.npz", image=np.moveaxis(image, 0, -1))
    np.testing.assert_array_equal(read_image(tmp_path / "a.npz"), image)
    np.savez(tmp_path / "x.npz", X=np.moveaxis(image, 0, -1)[np.newaxis])
    np.testing.assert_array_equal(read_image(tmp_path / "x.npz"), image)


def test_wrong_channel_count_message(tmp_path):
    write_image_tiff(tmp_path / "one.tif", _ramp(1))
    with pytest.raises(InputError) as error:
        read_image(tmp_path / "one.tif", n_channels=2)
    assert str(error.value) == f"{tmp_path / 'one.tif'}: has 1 channel, the project expects 2"


@pytest.mark.parametrize("pixels, message", [
    (np.zeros((2, 4, 4), np.float32), "blank"),
    (np.full((2, 4, 4), 3.0, np.float32), "blank"),
    (np.where(np.eye(4, dtype=bool), np.nan, 1.0).astype(np.float32)[np.newaxis], "NaN"),
    (np.where(np.eye(4, dtype=bool), np.inf, 1.0).astype(np.float32)[np.newaxis], "infinite"),
])
def test_blank_and_nan_images_are_refused(tmp_path, pixels, message):
    np.savez(tmp_path / "bad.npz", image=np.moveaxis(pixels, 0, -1))
    with pytest.raises(InputError, match=f"bad.npz.*{message}"):
        read_image(tmp_path / "bad.npz")


def test_huge_tiff_is_refused_from_its_metadata(tmp_path):
    # 20 x 20 compressed zero tiles of 1024 px: a 20480 x 20480 image in a few hundred kilobytes
    tile = np.zeros((1024, 1024), np.uint8)
    tifffile.imwrite(tmp_path / "huge.tif", data=itertools.repeat(tile, 400), shape=(20480, 20480), dtype=np.uint8,
                     tile=(1024, 1024), compression="zlib")
    with pytest.raises(InputError, match="huge.tif: image is 20480 x 20480 pixels, larger than"):
        read_image(tmp_path / "huge.tif")


def test_huge_npz_is_refused_before_reading_pixels(tmp_path):
    # an npz whose array header claims 20000 x 20000 but holds no data: only the header may be read
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive, archive.open("image.npy", "w") as stream:
        header = {"descr": "|u1", "fortran_order": False, "shape": (20000, 20000, 1)}
        np.lib.format.write_array_header_1_0(stream, header)
    with pytest.raises(InputError, match="image is 20000 x 20000 pixels"):
        read_image(tmp_path / "huge.npz")


def test_unreadable_inputs_name_the_file(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    (tmp_path / "a.bmp").write_bytes(b"x")
    np.save(tmp_path / "a.npy", _ramp())
    cases = [("broken.tif", "cannot read"), ("a.bmp", "unsupported"), ("a.npy", "npy"), ("missing.tif", "not found")]
    for name, message in cases:
        with pytest.raises(InputError, match=f"{name}: .*{message}"):
            read_image(tmp_path / name)


def test_normalize_percentile_by_hand():
    image = np.stack([np.arange(11, dtype=np.float32).reshape(1, 11), np.full((1, 11), 7.0, np.float32)])
    normalised = normalize_percentile(image, low=10, high=90)  # channel 0: percentiles 1 and 9
    np.testing.assert_allclose(normalised[0, 0], (np.arange(11) - 1) / 8, rtol=1e-6)
    np.testing.assert_array_equal(normalised[1], 0.0)
    assert normalised.dtype == np.float32


# --- labels and ROI zips -----------------------------------------------------------------------

def test_labels_from_tiff_png_and_npz(tmp_path):
    labels = np.array([[0, 1, 1], [2, 2, 0]], np.int32)
    tifffile.imwrite(tmp_path / "l.tif", labels.astype(np.float32))  # whole numbers stored as floats are fine
    Image.fromarray(labels.astype(np.uint16)).save(tmp_path / "l.png")
    np.savez(tmp_path / "l.npz", label=np.stack([labels, labels * 0], axis=-1))  # first map: whole cells
    np.savez(tmp_path / "y.npz", y=np.stack([labels, labels * 0], axis=-1))
    for name in ("l.tif", "l.png", "l.npz", "y.npz"):
        read = read_labels(tmp_path / name, shape=(2, 3))
        assert read.dtype == np.int32
        np.testing.assert_array_equal(read, labels)


@pytest.mark.parametrize("values, message", [
    (np.array([[0, 1.5]], np.float32), "whole numbers"),
    (np.array([[0, -1]], np.int16), "negative"),
])
def test_bad_label_values(tmp_path, values, message):
    tifffile.imwrite(tmp_path / "l.tif", values)
    with pytest.raises(InputError, match=f"l.tif: .*{message}"):
        read_labels(tmp_path / "l.tif")


def test_label_shape_mismatch_names_both_shapes(tmp_path):
    tifffile.imwrite(tmp_path / "l.tif", np.zeros((4, 5), np.uint16))
    with pytest.raises(InputError, match="l.tif: labels are 4 x 5, the image is 6 x 7"):
        read_labels(tmp_path / "l.tif", shape=(6, 7))


def test_roi_zip_square_and_triangle_by_hand(tmp_path):
    square = [(1, 1), (4, 1), (4, 3), (1, 3)]  # x 1..4, y 1..3: rows 1-2, columns 1-3
    # hypotenuse 3x + 4y = 12; centres inside when 3(c + .5) + 4(r + .5) < 12, i.e. 3c + 4r <= 8: 6 pixels,
    # as many as the triangle's area; no centre lies on an edge
    triangle = [(0, 0), (4, 0), (0, 3)]
    labels = read_roi_zip(_roi_zip(tmp_path / "r.zip", [square, triangle]), (6, 6))
    expected = np.zeros((6, 6), np.int32)
    expected[1:3, 1:4] = 1
    rows, cols = np.indices((6, 6))
    expected[3 * cols + 4 * rows <= 8] = 2  # the later ROI wins where they overlap
    np.testing.assert_array_equal(labels, expected)
    assert np.count_nonzero(labels == 2) == 6
    assert np.count_nonzero(labels == 1) == 6 - 1  # pixel (1, 1) went to the triangle
    np.testing.assert_array_equal(read_labels(tmp_path / "r.zip", shape=(6, 6)), expected)


def test_roi_zip_keeps_the_first_roi_and_clips_to_the_image(tmp_path):
    rois = [[(0, 0), (1, 0), (1, 1), (0, 1)], [(3, 3), (9, 3), (9, 9), (3, 9)]]
    labels = read_roi_zip(_roi_zip(tmp_path / "r.zip", rois), (5, 5))
    assert labels[0, 0] == 1 and np.count_nonzero(labels == 1) == 1
    assert np.count_nonzero(labels == 2) == 4  # rows and columns 3-4 of the 5 x 5 image


def test_roi_zip_refuses_lines(tmp_path):
    _roi_zip(tmp_path / "r.zip", [[(0, 0), (3, 3)]], roitype=roifile.ROI_TYPE.LINE)
    with pytest.raises(InputError, match="r.zip: ROI 1 .* not an area"):
        read_roi_zip(tmp_path / "r.zip", (5, 5))


def test_roi_zip_refuses_a_polygon_without_vertices(tmp_path):
    empty = roifile.ImagejRoi()
    empty.roitype, empty.name = roifile.ROI_TYPE.POLYGON, "ghost"
    with zipfile.ZipFile(tmp_path / "r.zip", "w") as archive:
        archive.writestr("ghost.roi", empty.tobytes())
    with pytest.raises(InputError, match=r"r.zip: ROI 1 \('ghost'\) has no vertices"):
        read_roi_zip(tmp_path / "r.zip", (5, 5))


def test_tissuenet_npz(tmp_path):
    images = np.arange(2 * 4 * 5 * 2, dtype=np.float32).reshape(2, 4, 5, 2)
    labels = np.zeros((2, 4, 5, 2), np.int32)
    labels[1, 1:3, 1:3, 0] = 7
    np.savez(tmp_path / "t.npz", X=images, y=labels)
    samples = read_tissuenet_npz(tmp_path / "t.npz")
    assert len(samples) == 2
    image, label = samples[1]
    np.testing.assert_array_equal(image, np.moveaxis(images[1], -1, 0))
    assert label.shape == (2, 4, 5) and label.dtype == np.int32 and np.count_nonzero(label[0] == 7) == 4
    np.savez(tmp_path / "x.npz", X=images)
    assert all(label is None for _, label in read_tissuenet_npz(tmp_path / "x.npz"))


def test_import_samples_pairs_a_folders_images_with_their_label_files(tmp_path):
    for name in ("a.tif", "a_masks.tif", "b.png", "c_labels.png", ".hidden.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"")  # discovery goes by names; the files are read on import
    found = [(name, image.name, labels and labels.name) for name, image, labels in import_samples(tmp_path)]
    assert found == [("a.tif", "a.tif", "a_masks.tif"), ("b.png", "b.png", None)]  # c_labels has no image
    assert import_samples(tmp_path / "b.png") == [("b.png", tmp_path / "b.png", None)]
    with pytest.raises(InputError, match="no such file or folder"):
        import_samples(tmp_path / "missing")


def test_cellpose_folder_pairs_images_with_masks(tmp_path):
    for name in ("b", "a"):
        write_image_tiff(tmp_path / f"{name}_img.tif", _ramp())
    Image.fromarray(np.eye(5, 6, dtype=np.uint16)).save(tmp_path / "a_masks.png")
    samples = read_cellpose_folder(tmp_path)
    assert [name for name, _, _ in samples] == ["a", "b"]
    assert samples[0][2].sum() == 5 and samples[1][2] is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no NAME_img"):
        read_cellpose_folder(tmp_path / "empty")


# --- scribbles ---------------------------------------------------------------------------------

def test_read_scribbles_from_npz_with_val_mask(tmp_path):
    config = RunConfig(tasks=vectra_tasks())  # S = 2 + 3
    scribbles = np.zeros((4, 5, 5), np.uint8)
    scribbles[1, 2, 4] = 1
    val_mask = np.zeros((4, 5), bool)
    val_mask[:2] = True
    np.savez(tmp_path / "s.npz", scribble=scribbles, val_mask=val_mask)
    read, read_mask = read_scribbles(tmp_path / "s.npz", config, (4, 5))
    np.testing.assert_array_equal(read, scribbles)
    np.testing.assert_array_equal(read_mask, val_mask)
    with pytest.raises(InputError, match="s.npz: scribbles have shape"):
        read_scribbles(tmp_path / "s.npz", RunConfig(), (4, 5))


def test_read_scribbles_from_label_image(tmp_path):
    config = RunConfig(tasks=[TaskConfig(classes=["cell"], ncomponents=[2, 2])])
    Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8)).save(tmp_path / "s.png")
    scribbles, val_mask = read_scribbles(tmp_path / "s.png", config, (2, 2))
    assert val_mask is None
    np.testing.assert_array_equal(scribbles[..., 0], [[0, 0], [1, 0]])  # cell
    np.testing.assert_array_equal(scribbles[..., 1], [[0, 1], [0, 0]])  # background


@pytest.mark.parametrize("values, config, message", [
    ([[0, 3]], RunConfig(), "value 3 is out of range"),
    ([[0, 0]], RunConfig(), "no scribbles"),
    ([[0, 1]], RunConfig(tasks=vectra_tasks()), "fits one task"),
])
def test_bad_scribble_label_images(tmp_path, values, config, message):
    Image.fromarray(np.array(values, np.uint8)).save(tmp_path / "s.png")
    with pytest.raises(InputError, match=f"s.png: .*{message}"):
        read_scribbles(tmp_path / "s.png", config, (1, 2))


def test_saved_files_get_the_usual_permissions_and_no_temporary_file_stays(tmp_path):
    write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == FILE_MODE
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt"]


def test_a_small_tiff_with_many_channels_is_refused_before_decoding(tmp_path):
    # 20 channels of 4096 x 4096 in zlib tiles: a few hundred kB on disk, 1.25 GiB as float32
    tile = np.zeros((1024, 1024), np.uint8)
    tifffile.imwrite(tmp_path / "many.tif", data=itertools.repeat(tile, 20 * 16), shape=(20, 4096, 4096),
                     dtype=np.uint8, tile=(1024, 1024), compression="zlib", metadata={"axes": "CYX"})
    assert (tmp_path / "many.tif").stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="many.tif: image has 20 channels of 4096 x 4096 pixels, 1.2 GiB"):
            read_image(tmp_path / "many.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20  # the header was read, not the pixels


def test_an_npz_claiming_many_channels_is_refused_from_its_header(tmp_path):
    with zipfile.ZipFile(tmp_path / "many.npz", "w") as archive, archive.open("image.npy", "w") as stream:
        np.lib.format.write_array_header_1_0(stream, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (4096, 4096, 40)})
    with pytest.raises(InputError, match="image has 40 channels"):
        read_image(tmp_path / "many.npz")


def test_a_roi_zip_entry_that_would_decompress_to_gigabytes_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0001.roi", b"\0" * (5 * 2 ** 20))  # 5 MB of zeros, a few kB compressed
    assert (tmp_path / "bomb.zip").stat().st_size < 100_000
    with pytest.raises(InputError, match="ROI '0001.roi' would take 5 MB"):
        read_labels(tmp_path / "bomb.zip", shape=(64, 64))
