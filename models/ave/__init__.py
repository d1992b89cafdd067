"""AVE (Audio-Visual Event dataset) localization models: AGVA baseline, CCLN and AVLC.

All models follow the :class:`avel.models.ave.blocks.AveModel` protocol (``forward``, ``losses``,
``predict``) and take a config dataclass with the paper's hyper-parameters as defaults.
"""

from avel.models.ave.agva import AgvaConfig, AgvaNet
from avel.models.ave.avlc import AvlcConfig, AvlcNet
from avel.models.ave.ccln import CclnConfig, CclnNet

__all__ = ["AgvaConfig", "AgvaNet", "AvlcConfig", "AvlcNet", "CclnConfig", "CclnNet"]
