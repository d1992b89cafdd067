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

__all__ = [
    "AssignerConfig", "CcnetConfig", "CcnetDetector", "ClassificationHead", "CrossModalPyramid", "DenseDetector",
    "DenseDetectorConfig", "EmaNormalizer", "EncoderConfig", "HeadConfig", "LossConfig", "MtgcConfig",
    "PostprocessConfig", "PyramidConfig", "RegressionHead", "TdmConfig", "TemporalDependencyModule", "UnavConfig",
    "UnavDetector", "UnimodalEncoder", "assign_targets", "available_models", "build_from_spec", "build_model",
    "diou_loss_1d", "giou_loss_1d", "make_points", "postprocess_batch", "register_model", "sigmoid_focal_loss",
    "soft_nms_1d",
]
