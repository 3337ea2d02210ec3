"""Reading images, labels and scribbles from the formats users bring, and what a folder holds; writing TIFFs.

Every reader returns the package's layouts (see docs/architecture.md): images (C, H, W) float32 with raw
intensities, instance labels (H, W) int32, scribbles (H, W, S) uint8. Anything a user can get wrong (a missing
or corrupt file, a wrong channel count, a blank image, a mismatched label size) raises
:class:`~impartial.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import glob
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import roifile
import tifffile
from PIL import Image

from .config import RunConfig
from .errors import InputError
from .scribbles import scribbles_from_label_image
from .storage import atomic_path

MAX_SIDE = 16384
MAX_PIXELS = MAX_SIDE * MAX_SIDE
# Values (channels x height x width) one image may decode to, checked from the header before any pixel is
# read: 1 GiB as float32. A small compressed file can claim a huge size; on a shared server it must not
# take everyone's memory.
MAX_VALUES = 2 ** 28
# Uncompressed bytes one ImageJ ROI may hold (a traced outline of 100 000 vertices takes under 1 MB).
MAX_ROI_BYTES = 4 * 1024 * 1024

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, *PIL_SUFFIXES, ".npz")
LABEL_MARKERS = ("_labels", "_label", "_masks", "_mask")  # "<image>_masks.tif" holds the labels of "<image>.tif"

# TIFF axes that may hold channels. "I" (a plain page sequence) and "Q" (unknown) carry no meaning, so such an
# axis is taken as channels only when it is short enough to be channels.
CHANNEL_AXES = "CS"
UNKNOWN_AXES = "IQ"
MAX_UNNAMED_CHANNELS = 8

# ImageJ ROI types that enclose an area; lines and points cannot be cells.
AREA_ROI_TYPES = (roifile.ROI_TYPE.POLYGON, roifile.ROI_TYPE.RECT, roifile.ROI_TYPE.OVAL,
                  roifile.ROI_TYPE.FREEHAND, roifile.ROI_TYPE.TRACED)



# --- images ------------------------------------------------------------------------------------

def read_image(path: str | Path, n_channels: int | None = None) -> np.ndarray:
    """Read a multi-channel image as (C, H, W) float32 raw intensities.

    Accepts TIFF / OME-TIFF (channel, Y and X axes found from the file's axes metadata, singleton Z / T dropped),
    PNG / JPEG (grey -> 1 channel, RGB -> 3, alpha dropped) and npz (``image`` (H, W, C) as the method writes,
    or ``X`` (H, W, C) / (1, H, W, C)). The size is checked from metadata before any pixel is read.

    Raises:
        InputError: missing, unreadable or unsupported file; ``n_channels`` given and different; empty or
            constant image; NaN / infinite pixels; more than ``MAX_PIXELS`` pixels.
    """
    path = existing_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raise InputError("plain .npy files are not accepted; save the image in an .npz as 'image' (H, W, C)", path)
    if suffix in TIFF_SUFFIXES:
        image = _read_tiff_image(path)
    elif suffix in PIL_SUFFIXES:
        image = _read_pil_image(path)
    elif suffix == ".npz":
        image = _read_npz_image(path)
    else:
        raise InputError(f"unsupported image type '{suffix}' (use {', '.join(IMAGE_SUFFIXES)})", path)
    _check_pixels(image, path)
    if n_channels is not None and image.shape[0] != n_channels:
        raise InputError(f"has {_plural(image.shape[0], 'channel')}, the project expects {n_channels}", path)
    return image


def write_image_tiff(path: str | Path, image: np.ndarray) -> None:
    """Atomically write a (C, H, W) image as an ImageJ hyperstack (axes CYX) that :func:`read_image` reads back.

    uint8 / uint16 / float32 are kept; other dtypes become float32 (the types ImageJ opens).
    """
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, imagej=True, metadata={"axes": "CYX"})


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale each channel of a (C, H, W) image so its ``low`` / ``high`` percentiles map to 0 / 1.

    Values outside the percentiles are not clipped. A constant channel becomes zeros. Returns float32.
    """
    flat = image.reshape(image.shape[0], -1).astype(np.float32)
    lows, highs = np.percentile(flat, [low, high], axis=1)
    spans = highs - lows
    scale = np.divide(1.0, spans, out=np.zeros_like(spans), where=spans > 0)
    return ((flat - lows[:, None]) * scale[:, None]).astype(np.float32).reshape(image.shape)


def _read_tiff_image(path: Path) -> np.ndarray:
    with _reading(path), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        channel_axis, y_axis, x_axis = _tiff_layout(series.axes.upper(), series.shape, path)
        channels = 1 if channel_axis is None else series.shape[channel_axis]
        _check_size(series.shape[y_axis], series.shape[x_axis], path, channels)
        pixels = series.asarray()
    if channel_axis is None:
        pixels = pixels[np.newaxis]
        channel_axis = 0
        y_axis, x_axis = y_axis + 1, x_axis + 1
    other_axes = tuple(axis for axis in range(pixels.ndim) if axis not in (channel_axis, y_axis, x_axis))
    # only singleton axes remain besides C, Y and X (checked by _tiff_layout)
    pixels = np.transpose(pixels, (channel_axis, y_axis, x_axis, *other_axes))
    return pixels.reshape(pixels.shape[:3]).astype(np.float32)


def _tiff_layout(axes: str, shape: tuple[int, ...], path: Path) -> tuple[int | None, int, int]:
    """Indices of the channel axis (None = one channel), the Y and the X axis of a TIFF series."""
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        return _layout_from_shape(shape, path)
    y_axis, x_axis = axes.index("Y"), axes.index("X")
    extra = [axis for axis in range(len(shape)) if axis not in (y_axis, x_axis) and shape[axis] > 1]
    if not extra:
        return None, y_axis, x_axis
    axis = extra[0]
    is_channels = axes[axis] in CHANNEL_AXES or (axes[axis] in UNKNOWN_AXES and shape[axis] <= MAX_UNNAMED_CHANNELS)
    if len(extra) > 1 or not is_channels:
        raise InputError(f"has axes {axes} with shape {shape}; expected one 2-D plane per channel "
                         "(no Z stacks or time series)", path)
    return axis, y_axis, x_axis


def _layout_from_shape(shape: tuple[int, ...], path: Path) -> tuple[int | None, int, int]:
    """Without axes metadata: two axes are Y, X; a third one, at most 8 long and the shortest, is channels."""
    kept = [axis for axis, size in enumerate(shape) if size > 1]
    if len(kept) == 2:
        return None, kept[0], kept[1]
    if len(kept) == 3:
        channel_axis = min(kept, key=lambda axis: shape[axis])
        if shape[channel_axis] <= MAX_UNNAMED_CHANNELS:
            y_axis, x_axis = (axis for axis in kept if axis != channel_axis)
            return channel_axis, y_axis, x_axis
    raise InputError(f"cannot tell the channel, Y and X axes of shape {shape}", path)


def _read_pil_image(path: Path) -> np.ndarray:
    with _reading(path), Image.open(path) as picture:
        width, height = picture.size
        _check_size(height, width, path, len(picture.getbands()))
        if picture.mode in ("P", "PA", "CMYK", "YCbCr", "HSV", "RGBA"):
            picture = picture.convert("RGB")
        elif picture.mode in ("1", "LA"):
            picture = picture.convert("L")
        pixels = np.asarray(picture)
    pixels = pixels if pixels.ndim == 3 else pixels[..., np.newaxis]
    return np.moveaxis(pixels, -1, 0).astype(np.float32)


def _read_npz_image(path: Path) -> np.ndarray:
    with _reading(path), np.load(path, allow_pickle=False) as archive:
        key = _first_key(archive, ("image", "X"), path)
        shape = _npz_shape(path, key)
        if len(shape) == 4 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) not in (2, 3):
            raise InputError(f"'{key}' has shape {shape}; expected (H, W, C) (use read_tissuenet_npz for stacks)",
                             path)
        _check_size(shape[0], shape[1], path, int(np.prod(shape[2:])))
        pixels = archive[key].reshape(shape)
    pixels = pixels if pixels.ndim == 3 else pixels[..., np.newaxis]
    return np.moveaxis(pixels, -1, 0).astype(np.float32)


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of array ``key`` in an npz, read from its header without loading the data."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(stream)
    return tuple(shape)


def _check_size(height: int, width: int, path: Path, channels: int = 1) -> None:
    """Refuse, from the header alone, images with too many pixels or too many values to decode."""
    if height * width > MAX_PIXELS:
        raise InputError(f"image is {height} x {width} pixels, larger than the {MAX_SIDE} x {MAX_SIDE} allowed; "
                         "crop or tile it first", path)
    if channels * height * width > MAX_VALUES:
        gib = channels * height * width * 4 / 2 ** 30
        raise InputError(f"image has {channels} channels of {height} x {width} pixels, {gib:.1f} GiB decoded, more "
                         f"than the {MAX_VALUES * 4 / 2 ** 30:.0f} GiB allowed; keep the channels you need or tile it",
                         path)


def _check_pixels(image: np.ndarray, path: Path | str) -> None:
    """Refuse (C, H, W) images that are empty, blank or hold NaN / infinite values."""
    if image.size == 0:
        raise InputError(f"image is empty (shape {image.shape})", path)
    if not np.isfinite(image).all():
        raise InputError("image has NaN or infinite pixels", path)
    if image.min() == image.max():
        raise InputError(f"image is blank: every pixel is {image.flat[0]:g}", path)


# --- labels ------------------------------------------------------------------------------------

def read_labels(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read instance labels as (H, W) int32 (0 = background) from TIFF, PNG, npz or an ImageJ ROI zip.

    npz: ``label`` ((H, W) or (H, W, L): the first map, whole cells for MIBI / Vectra) or ``y`` (TissueNet:
    the first map, whole cells). A ROI zip needs ``shape``.

    Raises:
        InputError: unreadable file; negative or non-integer values; shape different from ``shape``.
    """
    path = existing_file(path)
    if path.suffix.lower() == ".zip":
        if shape is None:
            raise InputError("an ROI zip needs the image size to become a label image", path)
        return read_roi_zip(path, shape)
    labels = _read_label_plane(path)
    if shape is not None and labels.shape != tuple(shape):
        raise InputError(f"labels are {labels.shape[0]} x {labels.shape[1]}, the image is {shape[0]} x {shape[1]}",
                         path)
    return labels


def _read_label_plane(path: Path) -> np.ndarray:
    """One (H, W) int32 map of non-negative integers from TIFF, PNG or npz."""
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        with _reading(path):
            values = tifffile.imread(path)
    elif suffix == ".png":
        with _reading(path), Image.open(path) as picture:
            values = np.asarray(picture)
    elif suffix == ".npz":
        with _reading(path), np.load(path, allow_pickle=False) as archive:
            values = archive[_first_key(archive, ("label", "y"), path)]
        values = values[0] if values.ndim == 4 and values.shape[0] == 1 else values
        values = values[..., 0] if values.ndim == 3 else values
    else:
        raise InputError(f"unsupported label type '{suffix}' (use .tif, .png, .npz or an ImageJ ROI .zip)", path)
    if values.ndim != 2:
        raise InputError(f"labels must be one 2-D map, got shape {values.shape}", path)
    return _as_label_array(values, path)


def _as_label_array(values: np.ndarray, path: Path) -> np.ndarray:
    """Check that ``values`` are non-negative integers that fit int32; return them as int32."""
    if values.size == 0:
        return values.astype(np.int32)
    if values.dtype.kind not in "iub":
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise InputError("labels must be whole numbers (found fractional, NaN or infinite values)", path)
    if values.min() < 0:
        raise InputError(f"labels must not be negative (found {values.min()})", path)
    if values.max() > np.iinfo(np.int32).max:
        raise InputError(f"label {values.max()} is too large for int32", path)
    return values.astype(np.int32)


def read_roi_zip(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise an ImageJ ROI zip (or single .roi) to (H, W) int32 labels.

    Every ROI is kept, with id 1..N in file order; a pixel belongs to a ROI when its centre is inside the
    polygon (pixel (r, c) has its centre at x = c + 0.5, y = r + 0.5 in ImageJ coordinates), which reproduces
    the area of pixel-traced outlines exactly. Where ROIs overlap the later one wins. Composite ROIs count
    pixels inside an odd number of their polygons.
    """
    path = existing_file(path)
    _check_roi_sizes(path)
    with _reading(path):
        rois = roifile.ImagejRoi.fromfile(path)
    rois = rois if isinstance(rois, list) else [rois]
    labels = np.zeros(shape, np.int32)
    for roi_id, roi in enumerate(rois, start=1):
        if roi.roitype not in AREA_ROI_TYPES:
            raise InputError(f"ROI {roi_id} ('{roi.name}') is a {roi.roitype.name.lower()}, not an area", path)
        polygons = [polygon for polygon in roi.coordinates(multi=True) if len(polygon)]
        if not polygons:
            raise InputError(f"ROI {roi_id} ('{roi.name}') has no vertices", path)
        window, inside = _pixels_inside(polygons, shape)
        labels[window][inside] = roi_id
    return labels


def _check_roi_sizes(path: Path) -> None:
    """Refuse a ROI zip whose entries would decompress to more than ``MAX_ROI_BYTES`` each (from the zip index)."""
    if not zipfile.is_zipfile(path):
        if path.stat().st_size > MAX_ROI_BYTES:
            raise InputError(f"ROI file is larger than {MAX_ROI_BYTES // 2 ** 20} MB", path)
        return
    with zipfile.ZipFile(path) as archive:
        for entry in archive.infolist():
            if entry.file_size > MAX_ROI_BYTES:
                raise InputError(f"ROI '{entry.filename}' would take {entry.file_size / 2 ** 20:.0f} MB, more than "
                                 f"the {MAX_ROI_BYTES // 2 ** 20} MB one outline may hold", path)


def _pixels_inside(polygons: list[np.ndarray], shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """The polygons' bounding window in the image and which of its pixel centres lie inside (even-odd rule).

    Scanline fill: every edge toggles the inside state of a row at the first pixel centre right of where it
    crosses the row's centre line; a running parity along the row gives the inside. Cost follows the polygon's
    size and perimeter, not the image's.
    """
    starts = np.concatenate(polygons).astype(np.float64)
    ends = np.concatenate([np.roll(polygon, -1, axis=0) for polygon in polygons]).astype(np.float64)
    corners = np.concatenate([starts, ends])
    left, top = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    right = max(min(int(np.ceil(corners[:, 0].max())), shape[1]), left)
    bottom = max(min(int(np.ceil(corners[:, 1].max())), shape[0]), top)
    height, width = bottom - top, right - left
    # rows whose centre line y = r + 0.5 an edge crosses, half-open (low <= y < high) so a shared vertex counts once
    low, high = np.minimum(starts[:, 1], ends[:, 1]), np.maximum(starts[:, 1], ends[:, 1])
    first = np.maximum(np.ceil(low - 0.5).astype(int), top)
    stop = np.minimum(np.ceil(high - 0.5).astype(int), bottom)
    counts = np.maximum(stop - first, 0)
    edge = np.repeat(np.arange(len(starts)), counts)
    rows = first[edge] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    (x0, y0), (x1, y1) = starts[edge].T, ends[edge].T
    crossing = x0 + (rows + 0.5 - y0) * (x1 - x0) / (y1 - y0)
    cols = np.clip(np.ceil(crossing - 0.5).astype(int) - left, 0, width)
    toggles = np.bincount((rows - top) * (width + 1) + cols, minlength=height * (width + 1))
    inside = np.cumsum(toggles.reshape(height, width + 1), axis=1)[:, :width] % 2 == 1
    return (slice(top, bottom), slice(left, right)), inside


def read_tissuenet_npz(path: str | Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Read a TissueNet npz: ``X`` (N, H, W, C) images and optional ``y`` (N, H, W, 2) labels.

    Returns one (image (C, H, W) float32, labels (2, H, W) int32 whole-cell then nuclear, or None) per image;
    channels stay in the file's order (TissueNet: nuclear, then membrane).
    """
    path = existing_file(path)
    with _reading(path), np.load(path, allow_pickle=False) as archive:
        if "X" not in archive:
            raise InputError(f"no array 'X' (found {', '.join(archive.files) or 'none'})", path)
        shape = _npz_shape(path, "X")
        if len(shape) != 4:
            raise InputError(f"'X' has shape {shape}; expected (N, H, W, C)", path)
        _check_size(shape[1], shape[2], path, shape[0] * shape[3])
        images = np.moveaxis(archive["X"], -1, 1).astype(np.float32)
        labels = np.moveaxis(archive["y"], -1, 1) if "y" in archive else None
    if labels is not None and (labels.shape[0], *labels.shape[2:]) != (images.shape[0], *images.shape[2:]):
        raise InputError(f"'y' has shape {labels.shape}, not matching 'X' {images.shape} (both as N, C, H, W)", path)
    for index, image in enumerate(images):
        _check_pixels(image, f"{path} (image {index})")
    return [(image, None if labels is None else _as_label_array(labels[index], path))
            for index, image in enumerate(images)]


def read_cellpose_folder(folder: str | Path) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """Read a Cellpose-style folder: ``NAME_img.EXT`` images paired with ``NAME_masks.EXT`` labels.

    Returns (NAME, image (C, H, W) float32, labels (H, W) int32 or None when no mask exists), sorted by NAME.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder not found", folder)
    pattern = re.compile(r"(?P<name>.+)_img\.[^.]+(\.[^.]+)?$")
    matches = sorted((match["name"], path) for path in folder.iterdir()
                     if (match := pattern.match(path.name)) and path.is_file())
    if not matches:
        raise InputError("no NAME_img.* images found", folder)
    samples = []
    for name, image_path in matches:
        image = read_image(image_path)
        masks = sorted(path for path in folder.glob(f"{glob.escape(name)}_masks.*") if path.is_file())
        labels = read_labels(masks[0], shape=image.shape[1:]) if masks else None
        samples.append((name, image, labels))
    return samples


def import_samples(path: str | Path) -> list[tuple[str, Path | np.ndarray, Path | np.ndarray | None]]:
    """What a file or folder holds, as (source name, image, labels or None) samples to import, where image and
    labels are arrays or files still to read (with :func:`read_image` / :func:`read_labels`).

    A TissueNet ``.npz`` (samples ``<file>_000``, ... with their whole-cell labels), a Cellpose folder
    (``NAME_img.*`` / ``NAME_masks.*``), a folder of images (``<name>_labels.*`` / ``<name>_masks.*`` beside an
    image are its labels) or one image file. Raises InputError when the path does not exist.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npz" and _is_tissuenet(path):
        return [(f"{path.stem}_{index:03d}", image, None if labels is None else labels[0])
                for index, (image, labels) in enumerate(read_tissuenet_npz(path))]
    if path.is_dir() and any(path.glob("*_img.*")):
        return read_cellpose_folder(path)
    if path.is_dir():
        return _folder_samples(path)
    if path.is_file():
        return [(path.name, path, None)]
    raise InputError("no such file or folder", path)


def _label_target(stem: str) -> str | None:
    """For ``cells_01_masks`` the image stem ``cells_01``; None when the stem names no label file."""
    for marker in LABEL_MARKERS:
        if stem.endswith(marker) and len(stem) > len(marker):
            return stem[: -len(marker)]
    return None


def _folder_samples(folder: Path) -> list[tuple[str, Path, Path | None]]:
    """(file name, image file, its label file or None) for the image files of a plain folder."""
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    label_files = {_label_target(p.stem): p for p in files if _label_target(p.stem)}
    return [(p.name, p, label_files.get(p.stem)) for p in files if not _label_target(p.stem)]


def _is_tissuenet(path: Path) -> bool:
    """True for an npz archive holding TissueNet's ``X`` array (a broken file is left to the image reader)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return "X" in archive.files
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


# --- scribbles ---------------------------------------------------------------------------------

def read_scribbles(path: str | Path, config: RunConfig,
                   shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read scribbles as (H, W, S) uint8 0/1 in the method's layout, plus the validation mask if stored.

    From an npz: ``scribble`` (H, W, S) and optional ``val_mask`` (H, W). From a label image (TIFF / PNG, only
    when ``config`` has one task): 0 = no scribble, 1 = background, k + 1 = class k (k = 1..n_classes).

    Returns:
        (scribbles (H, W, S) uint8, val_mask (H, W) bool or None).

    Raises:
        InputError: wrong shape, values out of range, a label image for several tasks, or no scribble at all.
    """
    path = existing_file(path)
    expected = (*shape, config.n_scribble_channels)
    if path.suffix.lower() == ".npz":
        scribbles, val_mask = _read_scribble_npz(path, expected)
    else:
        if len(config.tasks) != 1:
            raise InputError(f"a scribble label image fits one task, the project has {len(config.tasks)}; "
                             "use an npz with 'scribble' (H, W, S)", path)
        label_image = _read_label_plane(path)
        if label_image.shape != tuple(shape):
            raise InputError(f"scribbles are {label_image.shape[0]} x {label_image.shape[1]}, the image is "
                             f"{shape[0]} x {shape[1]}", path)
        n_classes = config.tasks[0].n_classes
        if label_image.max() > n_classes + 1:
            raise InputError(f"scribble value {label_image.max()} is out of range: 0 none, 1 background, "
                             f"2..{n_classes + 1} the classes", path)
        scribbles, val_mask = scribbles_from_label_image(label_image, n_classes), None
    if not scribbles.any():
        raise InputError("no scribbles", path)
    return scribbles, val_mask


def _read_scribble_npz(path: Path, expected: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    with _reading(path), np.load(path, allow_pickle=False) as archive:
        scribbles = archive[_first_key(archive, ("scribble",), path)]
        val_mask = archive["val_mask"] if "val_mask" in archive else None
    if scribbles.shape != expected:
        raise InputError(f"scribbles have shape {scribbles.shape}, the project expects {expected} "
                         "(per task one map per class, then background)", path)
    if not np.isin(scribbles, (0, 1)).all():
        raise InputError("scribble maps must hold only 0 and 1", path)
    if val_mask is not None and val_mask.shape != expected[:2]:
        raise InputError(f"val_mask has shape {val_mask.shape}, expected {expected[:2]}", path)
    return scribbles.astype(np.uint8), None if val_mask is None else val_mask.astype(bool)


# --- helpers -----------------------------------------------------------------------------------

def existing_file(path: str | Path) -> Path:
    """``path`` as a Path; InputError "file not found" when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    return path


def _first_key(archive: np.lib.npyio.NpzFile, keys: tuple[str, ...], path: Path) -> str:
    for key in keys:
        if key in archive.files:
            return key
    found = ", ".join(archive.files) or "none"
    raise InputError(f"no array named {' or '.join(repr(key) for key in keys)} (found: {found})", path)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a reader library's failure on a damaged file into an InputError naming the file.

    tifffile, PIL, numpy, zipfile and roifile raise many unrelated types for corrupt input, so every exception
    other than our own InputError becomes "cannot read".
    """
    try:
        yield
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"cannot read the file ({type(error).__name__}: {error})", path) from error
