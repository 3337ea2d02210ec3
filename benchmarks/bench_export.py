"""Writing the cells' export formats (CSV, GeoJSON, ImageJ ROIs, label TIFF): seconds per format and together.

The cells are the synthetic tissue's own labels (nuclei included), so the figures do not depend on a trained run.
"Together" is what ``pipeline.export_segmentation`` does for these formats: the cells' outlines are traced once
for the ROIs and the GeoJSON. The prediction's npz is left out: it holds the probability maps, not the cells.

    .venv/bin/python benchmarks/bench_export.py [--sizes 1024 2048]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial.export import (  # noqa: E402
    cell_features,
    cell_outlines,
    cell_table,
    save_cell_csv,
    save_geojson,
    save_label_tiff,
    save_roi_zip,
)
from impartial.synthetic import make_tissue  # noqa: E402

CHANNELS = ["membrane", "nuclear"]


def timed(write) -> float:
    started = time.perf_counter()
    write()
    return time.perf_counter() - started


def measure(size: int, folder: Path) -> dict[str, float]:
    tissue = make_tissue(size, size, seed=1)
    cells, nuclei = tissue.cells.astype(np.int32), tissue.nuclei.astype(np.int32)
    image = tissue.image.astype(np.float32)
    table = cell_table(cells, image, CHANNELS)
    times = {"cells": float(cells.max()),
             "csv": timed(lambda: save_cell_csv(folder / "cells.csv", cell_table(cells, image, CHANNELS))),
             "geojson": timed(lambda: save_geojson(folder / "cells.geojson",
                                                   cell_features(cells, table, nuclei=nuclei))),
             "roi": timed(lambda: save_roi_zip(folder / "cells.zip", cells)),
             "tiff": timed(lambda: save_label_tiff(folder / "cells.tif", cells))}

    def together() -> None:
        outlines = cell_outlines(cells)
        save_cell_csv(folder / "cells.csv", cell_table(cells, image, CHANNELS))
        save_geojson(folder / "cells.geojson", cell_features(cells, table, nuclei=nuclei, outlines=outlines))
        save_roi_zip(folder / "cells.zip", cells, outlines)
        save_label_tiff(folder / "cells.tif", cells)

    times["together"] = timed(together)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    args = parser.parse_args()
    print(f"{'image':>11} {'cells':>7} {'csv s':>6} {'geojson s':>9} {'roi s':>6} {'tiff s':>6} {'together s':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        for size in args.sizes:
            row = measure(size, Path(folder))
            print(f"{size:>5} x {size:<5} {row['cells']:>7.0f} {row['csv']:>6.2f} {row['geojson']:>9.2f} "
                  f"{row['roi']:>6.2f} {row['tiff']:>6.2f} {row['together']:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
