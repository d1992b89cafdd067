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

Every name below is imported on first use (PEP 562 ``__getattr__``): ``import avel.models.registry``
or ``avel models list`` loads no model module, and ``from avel.models import CcnetDetector`` loads
only the CCNet files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from avel.models.dense.base import DenseDetector, DenseDetectorConfig
    from avel.models.dense.ccnet import CcnetConfig, CcnetDetector, MtgcConfig
    from avel.models.dense.unav import UnavConfig, UnavDetector
    from avel.models.encoders import EncoderConfig, UnimodalEncoder
    from avel.models.heads import ClassificationHead, HeadConfig, RegressionHead
    from avel.models.label_assignment import AssignerConfig, assign_targets, make_points
    from avel.models.losses import EmaNormalizer, LossConfig, diou_loss_1d, giou_loss_1d, sigmoid_focal_loss
    from avel.models.necks import CrossModalPyramid, PyramidConfig
    from avel.models.postprocess import PostprocessConfig, postprocess_batch, soft_nms_1d
    from avel.models.registry import available_models, build_from_spec, build_model, register_model
    from avel.models.tdm import TdmConfig, TemporalDependencyModule

# public name -> module defining it
_EXPORTS = {
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
    "AssignerConfig",
    "CcnetConfig",
    "CcnetDetector",
    "ClassificationHead",
    "CrossModalPyramid",
    "DenseDetector",
    "DenseDetectorConfig",
    "EmaNormalizer",
    "EncoderConfig",
    "HeadConfig",
    "LossConfig",
    "MtgcConfig",
    "PostprocessConfig",
    "PyramidConfig",
    "RegressionHead",
    "TdmConfig",
    "TemporalDependencyModule",
    "UnavConfig",
    "UnavDetector",
    "UnimodalEncoder",
    "assign_targets",
    "available_models",
    "build_from_spec",
    "build_model",
    "diou_loss_1d",
    "giou_loss_1d",
    "make_points",
    "postprocess_batch",
    "register_model",
    "sigmoid_focal_loss",
    "soft_nms_1d",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'avel.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
