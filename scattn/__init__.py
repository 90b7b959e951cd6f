"""scattn: attention-based single-cell models for the scverse.

``import scattn as sa``; models under :mod:`scattn.model`, tools under :mod:`scattn.tl`,
plots under :mod:`scattn.pl`.
"""

from __future__ import annotations

from . import data, datasets, model, module, nn, pl, tl, train
from ._settings import settings
from ._version import __version__

__all__ = ["__version__", "data", "datasets", "model", "module", "nn", "pl", "settings", "tl", "train"]
