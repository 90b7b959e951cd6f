"""Constants shared by the AnnData side (``data``) and the torch side (``nn``, ``module``)."""

from __future__ import annotations

#: counts per cell after library-size normalisation (before log1p), everywhere in scattn
TARGET_SUM = 1e4
