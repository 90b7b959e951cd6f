"""Pure-torch modules, one file per architecture (scvi-tools ``BaseModuleClass``)."""

from ._cgran import CGRANModule

__all__ = ["CGRANModule"]
