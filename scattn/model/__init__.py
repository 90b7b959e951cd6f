"""User-facing models (scvi-tools ``BaseModelClass``, AnnData in and out)."""

from ._cfan import CFAN
from ._cgran import CGRAN
from ._geneformer import Geneformer
from ._overview import capabilities
from ._scgpt import SCGPT
from ._scvit import SCVIT
from ._sims import SIMS

__all__ = ["CFAN", "CGRAN", "SCGPT", "SCVIT", "SIMS", "Geneformer", "capabilities"]
