"""User-facing models (scvi-tools ``BaseModelClass``, AnnData in and out)."""

from ._cfan import CFAN
from ._cgran import CGRAN

__all__ = ["CFAN", "CGRAN"]
