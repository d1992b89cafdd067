"""avel.models.metrics: evaluation metrics.

* :mod:`avel.models.metrics.dense_map`: dense localization mAP (ActivityNet / UnAV protocol).
* :mod:`avel.models.metrics.results_io`: the ActivityNet results file (read, validate, write).
* :mod:`avel.models.metrics.ave`: AVE segment accuracy and cross-modal localization.
"""

from avel.models.metrics.dense_map import (
    DEFAULT_TIOU_THRESHOLDS,
    DetectionInputError,
    DetectionResult,
    evaluate_detection,
    interpolated_ap,
    segment_tiou,
)
from avel.models.metrics.results_io import (
    DetectionResults,
    ResultsFormatError,
    parse_results,
    read_results,
    results_to_json,
    write_results,
)

__all__ = [
    "DEFAULT_TIOU_THRESHOLDS",
    "DetectionInputError",
    "DetectionResult",
    "DetectionResults",
    "ResultsFormatError",
    "evaluate_detection",
    "interpolated_ap",
    "parse_results",
    "read_results",
    "results_to_json",
    "segment_tiou",
    "write_results",
]
