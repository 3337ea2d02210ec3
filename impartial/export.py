"""Writing results: prediction arrays (npz), a per-cell table (csv), label TIFFs and ImageJ ROI zips.

All functions take plain arrays; every file is written atomically through :mod:`impartial.storage`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import roifile
import tifffile
from scipy import ndimage
from skimage.measure import find_contours, regionprops_table

from .errors import InputError
from .storage import atomic_path, write_bytes, write_npz, write_text

PREDICTION_STRING_KEYS = ("class_names", "task_names")


EXPORT_FORMATS = ("npz", "csv", "tiff", "roi", "geojson")  # what one image's segmentation is exported as


def export_file_name(name: str, kind: str) -> str:
    """The file an image's export of one format (npz, csv, tiff, roi, geojson) is written to."""
    return {"npz": f"{name}.npz", "csv": f"{name}_cells.csv", "tiff": f"{name}_labels.tif",
            "roi": f"{name}_rois.zip", "geojson": f"{name}_cells.geojson"}[kind]


def save_prediction_npz(path: str | Path, *, class_segmentation: np.ndarray, class_segmentation_variance: np.ndarray,
                        entropy: np.ndarray, instances: np.ndarray, nuclei: np.ndarray | None = None,
                        class_names: list[str], task_names: list[str], core_probability: np.ndarray | None = None,
                        core_variance: np.ndarray | None = None) -> None:
    """Atomically save a prediction as npz (loadable with ``allow_pickle=False``).

    Args:
        class_segmentation: (K, H, W) mean probability of each foreground class over all tasks.
        class_segmentation_variance: (K, H, W) its MC-dropout variance.
        entropy: (T, H, W) normalised entropy of each task.
        instances: (H, W) cell labels; nuclei: (H, W) nucleus labels or None (then not stored).
        class_names: K names; task_names: T names (stored as unicode arrays).
        core_probability, core_variance: (H, W) cell-core probability and its variance, or None (not stored).
    """
    if len(class_names) != len(class_segmentation) or len(task_names) != len(entropy):
        raise ValueError(f"{len(class_names)} class names for {len(class_segmentation)} maps, "
                         f"{len(task_names)} task names for {len(entropy)} entropy maps")
    arrays = {
        "class_segmentation": np.asarray(class_segmentation, np.float32),
        "class_segmentation_variance": np.asarray(class_segmentation_variance, np.float32),
        "entropy": np.asarray(entropy, np.float32),
        "instances": np.asarray(instances, np.int32),
        "class_names": np.array(class_names, dtype=str),
        "task_names": np.array(task_names, dtype=str),
    }
    optional = {"nuclei": (nuclei, np.int32), "core_probability": (core_probability, np.float32),
                "core_variance": (core_variance, np.float32)}
    arrays.update({key: np.asarray(value, dtype) for key, (value, dtype) in optional.items() if value is not None})
    write_npz(path, **arrays)


def load_prediction_npz(path: str | Path) -> dict[str, np.ndarray | list[str]]:
    """Read what :func:`save_prediction_npz` wrote; ``class_names`` and ``task_names`` come back as lists."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            values = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"cannot read the prediction: {error}", path) from error
    for key in PREDICTION_STRING_KEYS:
        if key in values:
            values[key] = [str(name) for name in values[key]]
    return values


def cell_table(instances: np.ndarray, image: np.ndarray, channel_names: list[str],
               uncertainty: np.ndarray | None = None, class_map: np.ndarray | None = None,
               class_names: list[str] | None = None, pixel_size_um: float | None = None) -> pd.DataFrame:
    """One row per cell: id, class, area, centroid_y, centroid_x, mean_<channel>..., mean_uncertainty.

    Areas and centroids are in pixels; with the image's ``pixel_size_um`` (the side of a pixel in µm) the table
    also gives ``area_um2``, ``centroid_y_um`` and ``centroid_x_um``.

    Args:
        instances: (H, W) int labels, 0 = background.
        image: (C, H, W) intensities (raw or normalised) with one name per channel in ``channel_names``.
        uncertainty: (H, W) map averaged per cell; None leaves out ``mean_uncertainty``.
        class_map: (H, W) int index into ``class_names``; a cell's class is the most frequent one inside it.
            Without a map every cell gets the single name in ``class_names`` (default "cell").
    """
    class_names = class_names or ["cell"]
    if len(channel_names) != len(image):
        raise ValueError(f"{len(channel_names)} channel names for {len(image)} channels")
    if class_map is None and len(class_names) != 1:
        raise ValueError("a class map is needed to name cells of several classes")
    layers = [*image, *([] if uncertainty is None else [uncertainty])]
    names = [f"mean_{name}" for name in channel_names] + ([] if uncertainty is None else ["mean_uncertainty"])
    properties = regionprops_table(instances, intensity_image=np.stack(layers, axis=-1),
                                   properties=("label", "area", "centroid", "intensity_mean"))
    ids = np.asarray(properties["label"], np.int64)
    classes = [class_names[0]] * len(ids) if class_map is None else _majority_classes(instances, class_map, ids,
                                                                                      class_names)
    table = pd.DataFrame({"id": ids, "class": classes, "area": np.asarray(properties["area"], np.int64),
                          "centroid_y": properties["centroid-0"], "centroid_x": properties["centroid-1"]})
    if pixel_size_um is not None:
        if not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise ValueError(f"the pixel size must be a positive number of µm, got {pixel_size_um}")
        table.insert(3, "area_um2", table["area"] * pixel_size_um ** 2)
        table["centroid_y_um"] = table["centroid_y"] * pixel_size_um
        table["centroid_x_um"] = table["centroid_x"] * pixel_size_um
    for index, name in enumerate(names):
        table[name] = properties[f"intensity_mean-{index}"]
    return table


def _majority_classes(instances: np.ndarray, class_map: np.ndarray, ids: np.ndarray,
                      class_names: list[str]) -> list[str]:
    """Name of the most frequent ``class_map`` value inside each cell of ``ids`` (ties: the lower index)."""
    n_classes = len(class_names)
    pairs = instances.astype(np.int64).ravel() * n_classes + class_map.astype(np.int64).ravel()
    counts = np.bincount(pairs, minlength=(int(instances.max()) + 1) * n_classes).reshape(-1, n_classes)
    return [class_names[index] for index in np.argmax(counts[ids], axis=1)]


def save_cell_csv(path: str | Path, table: pd.DataFrame) -> None:
    """Atomically write a :func:`cell_table` as csv."""
    write_text(path, table.to_csv(index=False))


def save_label_tiff(path: str | Path, labels: np.ndarray) -> None:
    """Atomically write (H, W) labels as a zlib-compressed TIFF: uint16 when the ids fit, else int32."""
    dtype = np.uint16 if labels.size == 0 or labels.max() <= np.iinfo(np.uint16).max else np.int32
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")


def save_roi_zip(path: str | Path, labels: np.ndarray, outlines: dict[int, np.ndarray] | None = None) -> None:
    """Atomically write one ImageJ traced-polygon ROI per cell of (H, W) ``labels``, named by its id, in id order.

    Outlines run along pixel edges, so :func:`impartial.io.read_roi_zip` (pixel inside when its centre is)
    gives the labels back exactly for cells without holes, also those with pieces or background notches that
    touch at a corner, up to renumbering when ids are not 1..N. Holes are filled; of a cell's pieces that share
    no corner, only the largest group is written (see :func:`pixel_edge_outline`). ``outlines``: the labels'
    :func:`cell_outlines`, when the caller has them already.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for cell_id, outline in (cell_outlines(labels) if outlines is None else outlines).items():
            roi = roifile.ImagejRoi.frompoints(outline, name=str(cell_id))
            roi.roitype = roifile.ROI_TYPE.TRACED
            archive.writestr(f"{cell_id}.roi", roi.tobytes())
    write_bytes(path, buffer.getvalue())


def cell_outlines(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Every cell's :func:`pixel_edge_outline` in (x, y) pixels of (H, W) ``labels``, by id in id order: traced
    once for the ImageJ ROIs and the GeoJSON of the same cells."""
    outlines = {}
    for index, window in enumerate(ndimage.find_objects(labels)):
        if window is not None:
            outlines[index + 1] = pixel_edge_outline(labels[window] == index + 1) + (window[1].start, window[0].start)
    return outlines


def pixel_edge_outline(mask: np.ndarray) -> np.ndarray:
    """Outer outline of a 2-D bool mask along pixel edges: (M, 2) int (x, y) corner points, corners only.

    Pixel (r, c) spans x in [c, c + 1], y in [r, r + 1]. Follows ImageJ's traced outlines: pixels joined only
    at a corner are separate pieces, whose outlines are spliced at that corner into one polygon that touches
    itself there; background joined at a corner stays outside. Holes are filled; of pieces that share no corner,
    the largest group is outlined. ``mask`` must have a pixel set.
    """
    if not mask.any():
        raise ValueError("an empty mask has no outline")
    loops = [_corner_loop(contour) for contour in find_contours(_upsampled(mask), 0.5, fully_connected="low")]
    by_area = sorted(((_signed_area(loop), loop) for loop in loops), key=lambda pair: -pair[0])
    outer = [loop for area, loop in by_area if area > 0]
    outline = _splice(outer)
    step = np.sign(np.diff(outline, axis=0, prepend=outline[-1:]))  # from each point's predecessor to it
    turns = np.any(step != np.roll(step, -1, axis=0), axis=1)
    return outline[turns]


def _upsampled(mask: np.ndarray) -> np.ndarray:
    """The mask with every pixel doubled in both directions, padded by one background pixel."""
    height, width = mask.shape
    upsampled = np.zeros((2 * height + 2, 2 * width + 2), np.float32)
    upsampled[1:-1, 1:-1] = mask.repeat(2, axis=0).repeat(2, axis=1)
    return upsampled


def _corner_loop(contour: np.ndarray) -> np.ndarray:
    """A closed find_contours (row, col) contour of :func:`_upsampled` as (M, 2) int (x, y) pixel corners.

    On the upsampled grid marching squares runs exactly along the pixel edges and cuts each corner a quarter
    pixel short; rounding snaps those cut points onto the corner. Repeated points are dropped.
    """
    # padded upsampled index p lies at original coordinate (p - 0.5) / 2
    corners = np.rint((contour[:-1, ::-1] - 0.5) / 2).astype(np.int32)
    return corners[np.any(np.diff(corners, axis=0, prepend=corners[-1:]) != 0, axis=1)]


def _splice(loops: list[np.ndarray]) -> np.ndarray:
    """Join loops that share a corner into one closed polygon, starting from the first loop.

    At a shared corner the walk detours round the other loop and comes back; the polygon's even-odd interior is
    the union of the loops' interiors, since every edge is kept exactly once. Loops sharing no corner are dropped.
    """
    chain = [tuple(point) for point in loops[0].tolist()]
    rest = [[tuple(point) for point in loop.tolist()] for loop in loops[1:]]
    joined = True
    while joined:
        joined = False
        positions = {point: index for index, point in enumerate(chain)}
        for number, loop in enumerate(rest):
            shared = next((index for index, point in enumerate(loop) if point in positions), None)
            if shared is not None:
                at = positions[loop[shared]]
                chain = chain[:at + 1] + loop[shared + 1:] + loop[:shared + 1] + chain[at + 1:]
                del rest[number]
                joined = True
                break
    return np.array(chain, np.int32)


def _signed_area(polygon: np.ndarray) -> float:
    """Shoelace area of an (M, 2) (x, y) polygon, positive for find_contours' outer outlines."""
    x, y = polygon[:, 0].astype(np.float64), polygon[:, 1].astype(np.float64)
    return float(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0]) / 2


# --- QuPath GeoJSON --------------------------------------------------------------------------------

GEOJSON_OBJECT_TYPES = ("cell", "detection", "annotation")


def cell_polygon(mask: np.ndarray, offset: tuple[int, int] = (0, 0)):
    """The outline of one cell (a 2-D bool mask) as a valid shapely Polygon or MultiPolygon in (x, y) pixels.

    The outline runs along pixel edges (:func:`pixel_edge_outline`: holes filled, the largest group of pieces),
    shifted by ``offset`` = (row, column) of the mask's top-left pixel. A traced outline that touches itself at a
    corner is not a valid simple polygon; ``make_valid`` splits it there into a MultiPolygon of the same area.
    """
    return _valid_polygon(pixel_edge_outline(mask) + np.array([offset[1], offset[0]]))


def _valid_polygon(outline: np.ndarray):
    """The shapely polygon of an (M, 2) (x, y) :func:`pixel_edge_outline`, split where it touches itself."""
    from shapely.geometry import MultiPolygon, Polygon
    from shapely.validation import make_valid

    polygon = Polygon(outline.astype(float))
    if polygon.is_valid:
        return polygon
    repaired = make_valid(polygon)
    parts = [part for part in getattr(repaired, "geoms", [repaired]) if isinstance(part, Polygon) and part.area > 0]
    if not parts:  # make_valid left only lines: cannot happen for a non-empty mask, kept as a safeguard
        return polygon.buffer(0)
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def cell_features(labels: np.ndarray, table: pd.DataFrame | None = None, offset: tuple[int, int] = (0, 0),
                  object_type: str = "cell", nuclei: np.ndarray | None = None,
                  outlines: dict[int, np.ndarray] | None = None) -> list[dict]:
    """QuPath-compatible GeoJSON features, one per cell of (H, W) ``labels``, in id order.

    Each feature holds the cell's polygon (valid, in image pixels (x, y), shifted by ``offset`` = (row, column)
    of ``labels``' top-left pixel in the whole image), ``properties.objectType`` (``cell``, ``detection`` or
    ``annotation``), ``properties.classification.name`` and ``properties.measurements``: the numeric columns of
    the cell's row in ``table`` (a :func:`cell_table`, matched by ``id``; its ``class`` names the classification).
    Without a table the class is "cell" and the measurements are the id and the area. With ``nuclei`` (labels
    holding each nucleus under its cell's id) a ``cell`` also gets its ``nucleusGeometry``, as QuPath writes it.
    ``outlines``: the labels' :func:`cell_outlines`, when the caller has them already.
    """
    from shapely.geometry import mapping

    if object_type not in GEOJSON_OBJECT_TYPES:
        raise ValueError(f"objectType must be one of {', '.join(GEOJSON_OBJECT_TYPES)}, got '{object_type}'")
    rows = {} if table is None else {int(row["id"]): row for row in table.to_dict("records")}
    outlines = cell_outlines(labels) if outlines is None else outlines
    features = []
    for index, window in enumerate(ndimage.find_objects(labels)):
        if window is None:
            continue
        cell_id = index + 1
        corner = (offset[0] + window[0].start, offset[1] + window[1].start)
        row = rows.get(cell_id) or {"id": cell_id, "class": "cell",
                                    "area": int(np.count_nonzero(labels[window] == cell_id))}
        measurements = {key: _json_number(value) for key, value in row.items()
                        if key != "class" and isinstance(value, (int, float, np.integer, np.floating))}
        properties = {"objectType": object_type, "name": str(cell_id),
                      "classification": {"name": str(row.get("class", "cell"))}, "measurements": measurements}
        if nuclei is not None and object_type == "cell":
            nucleus = nuclei[window] == cell_id
            if nucleus.any():
                properties["nucleusGeometry"] = mapping(cell_polygon(nucleus, corner))
        features.append({"type": "Feature", "id": str(cell_id),
                         "geometry": mapping(_valid_polygon(outlines[cell_id] + (offset[1], offset[0]))),
                         "properties": properties})
    return features


def _json_number(value) -> int | float | None:
    """A table value as a plain JSON number (NaN, which JSON lacks, becomes null)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value) if np.isfinite(value) else None


def save_geojson(path: str | Path, features: list[dict]) -> None:
    """Atomically write ``features`` as a GeoJSON FeatureCollection (QuPath: File > Import objects)."""
    import json

    write_text(path, json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":")))
