"""User-facing models (scvi-tools ``BaseModelClass``, AnnData in and out)."""

from ._cgran import CGRAN

__all__ = ["CGRAN"]
