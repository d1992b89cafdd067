"""avel.models: localization models, losses, post-processing and metrics.

Model protocol (what the trainer calls)::

    outputs = model(batch)                  # forward on a collated batch
    losses = model.losses(outputs, batch)   # dict with a scalar "total"
    preds = model.predict(outputs, batch)   # task-specific predictions

Dense detectors (``avel.models.dense``) predict per sample a list of
``(start_s, end_s, label_id, score)``. Build any registered model with
:func:`build_model` (``avel models list`` / ``avel models info NAME``).

Shared dense pieces, reusable by new detectors: :mod:`avel.models.blocks`,
:mod:`avel.models.encoders`, :mod:`avel.models.necks`, :mod:`avel.models.tdm`,
:mod:`avel.models.heads`, :mod:`avel.models.label_assignment`, :mod:`avel.models.losses`,
:mod:`avel.models.postprocess` and the :class:`DenseDetector` skeleton.
"""
import importlib
from typing import Any

# public name -> defining module; imported on first access (PEP 562), so that light users of a
# subpackage (``avel eval`` reads avel.models.metrics) do not import torch.
_EXPORTS: dict[str, str] = {
    "DenseDetector": "avel.models.dense.base",
    "DenseDetectorConfig": "avel.models.dense.base",
    "CcnetConfig": "avel.models.dense.ccnet",
    "CcnetDetector": "avel.models.dense.ccnet",
    "MtgcConfig": "avel.models.dense.ccnet",
    "UnavConfig": "avel.models.dense.unav",
    "UnavDetector": "avel.models.dense.unav",
    "EncoderConfig": "avel.models.encoders",
    "UnimodalEncoder": "avel.models.encoders",
    "ClassificationHead": "avel.models.heads",
    "HeadConfig": "avel.models.heads",
    "RegressionHead": "avel.models.heads",
    "AssignerConfig": "avel.models.label_assignment",
    "assign_targets": "avel.models.label_assignment",
    "make_points": "avel.models.label_assignment",
    "EmaNormalizer": "avel.models.losses",
    "LossConfig": "avel.models.losses",
    "diou_loss_1d": "avel.models.losses",
    "giou_loss_1d": "avel.models.losses",
    "sigmoid_focal_loss": "avel.models.losses",
    "CrossModalPyramid": "avel.models.necks",
    "PyramidConfig": "avel.models.necks",
    "PostprocessConfig": "avel.models.postprocess",
    "postprocess_batch": "avel.models.postprocess",
    "soft_nms_1d": "avel.models.postprocess",
    "available_models": "avel.models.registry",
    "build_from_spec": "avel.models.registry",
    "build_model": "avel.models.registry",
    "register_model": "avel.models.registry",
    "TdmConfig": "avel.models.tdm",
    "TemporalDependencyModule": "avel.models.tdm",
}

__all__ = [
    "AssignerConfig", "CcnetConfig", "CcnetDetector", "ClassificationHead", "CrossModalPyramid", "DenseDetector",
    "DenseDetectorConfig", "EmaNormalizer", "EncoderConfig", "HeadConfig", "LossConfig", "MtgcConfig",
    "PostprocessConfig", "PyramidConfig", "RegressionHead", "TdmConfig", "TemporalDependencyModule", "UnavConfig",
    "UnavDetector", "UnimodalEncoder", "assign_targets", "available_models", "build_from_spec", "build_model",
    "diou_loss_1d", "giou_loss_1d", "make_points", "postprocess_batch", "register_model", "sigmoid_focal_loss",
    "soft_nms_1d",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'avel.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
