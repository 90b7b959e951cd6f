"""CFAN: Cell Feature Attention Network as an scvi-tools model."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from scattn._docs import scattn_dsp
from scattn.module import MODULE_KEYS, CFANModule

from .base import FittedState, GenePanelClassifier

logger = logging.getLogger(__name__)


@scattn_dsp.dedent
class CFAN(GenePanelClassifier):
    """Cell Feature Attention Network (Wang, Fan & Ma, section 3.1).

    u feature extractors (each dense -> ReLU -> LayerNorm, 128 dims) read the cell's
    log-normalised expression; the u features are tokens of one single-head self-attention
    (value dim m = 16, then LayerNorm); a 1D convolution runs along the renewed features and a
    fully connected layer gives the class logits. Dropout 0.2 on every layer.

    Parameters
    ----------
    %(model_adata)s
    n_top_genes
        Number of most variable genes to use (ignored when `genes` is given); `None`: all
        registered genes.
    %(genes)s
    n_extractors
        Number u of feature extractors (paper: 16).
    n_features
        Dimension of each feature (paper: 128).
    n_qk
        Query/key dimension d of the feature attention (not given in the paper).
    n_values
        Value dimension m of the feature attention (paper: 16).
    conv_channels
        Output channels of the 1D convolution (not given in the paper).
    kernel_size
        Width of the 1D convolution along the features (odd).
    dropout
        Dropout rate on every layer (paper: 0.2).
    %(fitted)s

    Notes
    -----
    * **Input**: counts are normalised to 10,000 per cell and log1p-transformed inside the
      model (or log-normalised data is used as given), over the model's genes (default: the
      1000 most variable, as for CGRAN, so that attributions of both models cover the same
      genes).
    * **Embedding** (``get_latent_representation``, ``obsm["X_cfan"]``): the flattened,
      ReLU-activated output of the convolution (``conv_channels * n_extractors`` = 256 dims by
      default). It is the layer the classifier reads, the counterpart of CGRAN's renewed cell
      token; the renewed feature matrix itself is in :meth:`get_feature_attention`'s output.
    * **Attribution** (``get_attention``, ``layers["cfan_attention"]``): input perturbation
      (paper, section 4.2.1): the negative gradient of the cross-entropy for the cell's
      predicted class with respect to its log-normalised expression. Positive values are
      genes whose increase would make the call more confident; the layer keeps each cell's
      top-k positive values. It is a gradient, not an attention weight: it can point to
      genes the cell does not express.
    * **Feature attention** (:meth:`get_feature_attention`, :func:`scattn.pl.feature_attention`):
      the u x u attention among a cell's features (paper, Figure 3).

    Examples
    --------
    >>> import scattn as sa
    >>> sa.model.CFAN.setup_anndata(adata, labels_key="cell_type", layer="counts")
    >>> model = sa.model.CFAN(adata)
    >>> model.train()
    >>> model.predict()  # adata.obs["cfan_prediction"], adata.uns["cfan_markers"], ...
    """

    _module_cls = CFANModule
    _key = "cfan"
    _inference_batch_factor = 8  # 1,024 cells a minibatch at the default batch size
    _train_defaults = GenePanelClassifier._train_defaults.replace(batch_size=64)
    _attention_description = (
        "input perturbation: negative gradient of the loss for the predicted class w.r.t. the "
        "log-normalised expression"
    )

    def __init__(
        self,
        adata: AnnData,
        *,
        n_top_genes: int | None = 1000,
        genes: Sequence[str] | None = None,
        n_extractors: int = 16,
        n_features: int = 128,
        n_qk: int = 16,
        n_values: int = 16,
        conv_channels: int = 16,
        kernel_size: int = 3,
        dropout: float = 0.2,
        fitted: FittedState | None = None,
    ) -> None:
        super().__init__(adata)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if fitted is None:
            fitted = self._panel_state(n_top_genes, genes)
        self._init_panel(fitted)
        self.module = self._module_cls(
            **self._module_gene_args(fitted),
            n_extractors=n_extractors,
            n_features=n_features,
            n_qk=n_qk,
            n_values=n_values,
            conv_channels=conv_channels,
            kernel_size=kernel_size,
            dropout=dropout,
        )
        self._model_summary_string = (
            f"CFAN: {len(self.var_names_)} genes, {len(self.classes_)} classes, u={n_extractors} "
            f"extractors x {n_features}, attention d={n_qk} m={n_values}, conv {conv_channels}x"
            f"{kernel_size}, dropout={dropout}"
        )
        self._record_init_params(locals())

    def get_feature_attention(
        self,
        adata: AnnData | None = None,
        indices=None,
        *,
        batch_size: int | None = None,
        return_features: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The u x u attention among each cell's features (paper, Figure 3).

        Parameters
        ----------
        adata
            AnnData (aligned by gene name); `None` for the training data.
        indices
            Cells to use.
        batch_size
            Minibatch size.
        return_features
            Also return the renewed features ``F`` (cells x u x m).

        Returns
        -------
        ``(cells, u, u)`` array; row i of a cell's matrix is how feature i attends to each
        feature (rows sum to 1). With `return_features`, also the ``(cells, u, m)`` features.
        """
        self._check_usable()
        keys = (MODULE_KEYS.FEATURE_ATTENTION, MODULE_KEYS.FEATURES) if return_features \
            else (MODULE_KEYS.FEATURE_ATTENTION,)
        out = self._infer(adata, indices=indices, batch_size=batch_size, keys=keys,
                          return_feature_attention=True, desc="CFAN.get_feature_attention")
        if return_features:
            return out[MODULE_KEYS.FEATURE_ATTENTION], out[MODULE_KEYS.FEATURES]
        return out[MODULE_KEYS.FEATURE_ATTENTION]
