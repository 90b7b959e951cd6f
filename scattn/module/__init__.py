"""Pure-torch modules, one file per architecture (scvi-tools ``BaseModuleClass``)."""

from ._base import ClassifierModule, GenePanel, classification_loss
from ._cfan import CFANModule
from ._cgran import CGRANModule
from ._sims import SIMSModule

__all__ = ["CFANModule", "CGRANModule", "ClassifierModule", "GenePanel", "SIMSModule",
           "classification_loss"]
