"""Building blocks of CondenseNet / CondenseNetV2 (learned group conv, SFR, SE, dense layers)."""
from .activation import HS, make_activation  # noqa: F401
from .conv import Conv  # noqa: F401
from .dense import _DenseBlock, _DenseLayer, _SFRDenseBlock, _SFRDenseLayer, _Transition  # noqa: F401
from .lgc import (CondensedLGC, CondensingModule, LearnedGroupConv, ShuffleLayer,  # noqa: F401
                  ShuffleLayerTrans, stage_for_progress)
from .se import SELayer  # noqa: F401
from .sfr import SFR, CondensedSFR  # noqa: F401
from . import counting  # noqa: F401,E402  (FLOPs handlers of the learned group conv and SFR)
