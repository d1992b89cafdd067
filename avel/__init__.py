"""avel: audio-visual event localization toolkit.

Subpackages (each a top-level folder of the repository):

- ``avel.datasets``: annotation formats, sampling plans, the HDF5 feature store, torch datasets,
  the synthetic benchmark. The ground floor: imports nothing else from avel.
- ``avel.extractors``: feature extractors (I3D, RAFT flow, VGGish, VGG-19, ONE-PEACE).
- ``avel.models``: localization models, losses, post-processing and metrics.
- ``avel.pipeline``: orchestration of extractors into stores (Ray lives here).
- ``avel.cli``: the ``avel`` command.
"""

__version__ = "0.1.0"
