"""Pure-torch modules, one file per architecture (scvi-tools ``BaseModuleClass``)."""

from ._base import PanelModule, ScattnModule, classification_loss
from ._cfan import CFANModule
from ._cgran import CGRANModule
from ._constants import CONDITION_KEY, MODULE_KEYS, OBJECTIVES
from ._geneformer import GeneformerModule
from ._scgpt import SCGPTModule
from ._scvit import SCVITModule
from ._sims import SIMSModule

__all__ = [
    "SCGPTModule",
    "CONDITION_KEY",
    "MODULE_KEYS",
    "OBJECTIVES",
    "CFANModule",
    "CGRANModule",
    "GeneformerModule",
    "PanelModule",
    "SCVITModule",
    "SIMSModule",
    "ScattnModule",
    "classification_loss",
]
