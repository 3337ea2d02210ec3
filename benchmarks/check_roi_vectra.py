"""Check that read_roi_zip reproduces every polygon's area on the shared Vectra ROI zips.

For traced (pixel-edge) outlines the shoelace area of each polygon must equal the number of pixels whose centre
falls inside it. Prints, per zip, the number of ROIs, of labelled ids and the largest area difference, and
whether writing the labels back with export.save_roi_zip and reading them again changes any pixel.

Usage: .venv/bin/python benchmarks/check_roi_vectra.py [DATA_FOLDER]   (default /work/shared/data/vectra)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import roifile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial.export import save_roi_zip  # noqa: E402
from impartial.io import read_image, read_roi_zip  # noqa: E402


def shoelace_area(polygon: np.ndarray) -> float:
    """Area enclosed by an (M, 2) polygon."""
    x, y = polygon[:, 0], polygon[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def check(zip_path: Path, image_path: Path) -> int:
    """Print the comparison for one zip; return the largest area difference plus the changed pixels (0 = exact)."""
    shape = read_image(image_path).shape[1:]
    labels = read_roi_zip(zip_path, shape)
    rois = roifile.ImagejRoi.fromfile(zip_path)
    polygon_areas = np.array([shoelace_area(roi.coordinates()) for roi in rois])
    pixel_counts = np.bincount(labels.ravel(), minlength=len(rois) + 1)[1:]
    difference = np.abs(pixel_counts - polygon_areas)
    changed = count_round_trip_changes(labels)
    print(f"{zip_path.name}: {len(rois)} ROIs, {np.count_nonzero(pixel_counts)} ids with pixels, "
          f"max |pixels - polygon area| = {difference.max():g}, ids {labels.min()}..{labels.max()}, "
          f"pixels changed by an export round trip: {changed}")
    return int(difference.max()) + changed


def count_round_trip_changes(labels: np.ndarray) -> int:
    """Pixels whose id differs after save_roi_zip then read_roi_zip."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rois.zip"
        save_roi_zip(path, labels)
        return int(np.count_nonzero(read_roi_zip(path, labels.shape) != labels))


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data/vectra")
    worst = max(check(zip_path, folder / zip_path.name.replace("_rois.zip", ".tif"))
                for zip_path in sorted(folder.glob("*_rois.zip")))
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
