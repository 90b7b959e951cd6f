"""Pure-torch modules, one file per architecture (scvi-tools ``BaseModuleClass``)."""

from ._base import GenePanel, classification_loss
from ._cfan import CFANModule
from ._cgran import CGRANModule

__all__ = ["CFANModule", "CGRANModule", "GenePanel", "classification_loss"]
