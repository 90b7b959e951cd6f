"""The latent mixin: a cell embedding from any model that has one."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scattn._docs import scattn_dsp
from scattn.module import MODULE_KEYS


class LatentMixin:
    """``get_latent_representation`` for models whose module's ``inference`` returns
    :data:`MODULE_KEYS.Z <scattn.module.MODULE_KEYS>` (cells x latent dims)."""

    @scattn_dsp.dedent
    def get_latent_representation(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> np.ndarray:
        """The cell embedding (cells x latent dims); see the model's docstring for what it is.

        Parameters
        ----------
        %(adata)s
        %(indices)s
        %(batch_size)s
        """
        self._check_usable()
        out = self._infer(adata, indices=indices, batch_size=batch_size, keys=(MODULE_KEYS.Z,),
                          with_empty=True, desc=f"{type(self).__name__}.get_latent_representation")
        return self._blank_empty_cells(out[MODULE_KEYS.Z], out["empty"], "embedding")
