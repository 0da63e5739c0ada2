"""cspdet: a clear, fast, hackable cross-stage-partial (CSP) detector in the YOLO family."""

__version__ = "0.1.0"
