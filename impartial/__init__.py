"""ImPartial: whole-cell segmentation from scribbles with uncertainty."""

__version__ = "0.1.0"
