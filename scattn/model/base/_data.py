"""Getting any AnnData into a trained model: validation, gene alignment, minibatch inference."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from scattn._quiet import quiet
from scattn._settings import settings
from scattn.data import align_to_genes, check_input, iter_row_blocks
from scattn.module import MODULE_KEYS

#: column of a private aligned AnnData's ``var``: whether the user's data held the gene
PRESENT = "_scattn_present"

logger = logging.getLogger(__name__)


def covariate_keys(setup_args: dict) -> list[str]:
    """obs columns besides labels in set-up arguments: the batch key, categorical covariates."""
    keys = [setup_args.get("batch_key"), *(setup_args.get("categorical_covariate_keys") or []),
            setup_args.get("condition_key")]
    return [k for k in keys if k]


class AlignedDataMixin:
    """Models whose input genes are matched by name.

    Requires the model to set ``var_names_`` (the genes it reads, a subset of the
    registered genes) and to be an scvi-tools ``BaseModelClass`` whose module declares its
    ``inference`` inputs (``_get_inference_input``).
    """

    @property
    def _setup_args(self) -> dict:
        """The arguments `setup_anndata` was called with."""
        return self.adata_manager.registry["setup_args"]

    @property
    def _read_genes(self) -> pd.Index:
        """The model genes it can read: those present in the data it was set up with.

        A model made by ``load_query_data`` from a query lacking some reference genes reads
        them as zero, whatever later data holds.
        """
        genes = pd.Index(self.var_names_)
        panel = getattr(self.module, "genes", None)
        if panel is None or not panel.has_missing:
            return genes
        return genes[panel.gene_index.cpu().numpy() < panel.n_input]

    @property
    def _registered_var_names(self) -> pd.Index:
        """All genes of the AnnData the model was set up with (the data loader's columns)."""
        return pd.Index(self.adata_manager.get_state_registry(REGISTRY_KEYS.X_KEY).column_names)

    @contextmanager
    def _aligned(self, adata: AnnData | None, *, min_gene_overlap: float = 0.5) -> Iterator[AnnData]:
        """Context giving an AnnData registered with this model, holding `adata`'s cells.

        `adata=None` (or the model's own AnnData) is used as it is. Any other AnnData is
        checked (same kind of data, unique genes, no empty cells), aligned by gene name to the
        model's genes into a private AnnData, and that is registered for the duration of the
        block, then deregistered so the model keeps no copy. The user's object is never
        written to.
        """
        if adata is None or adata is self.adata:
            self._check_own_data()
            yield self.adata
            return
        internal = self._align(adata, min_gene_overlap=min_gene_overlap)
        with quiet():  # scvi announces the set-up transfer on every new AnnData
            self._validate_anndata(internal)
        try:
            yield internal
        finally:
            # transferred managers live only in this instance's store (scvi's
            # `deregister_manager` looks in the class store and cannot find them)
            uuid = internal.uns.get("_scvi_uuid")
            self._per_instance_manager_store.get(self.id, {}).pop(uuid, None)
            self._setup_adata_manager_store.pop(uuid, None)

    def _check_own_data(self) -> None:
        """The model's own AnnData still fits its registration: same shape, same kind of values."""
        adata, stats = self.adata, self.summary_stats
        if (adata.n_obs, adata.n_vars) != (stats.n_cells, stats.n_vars):
            raise ValueError(
                f"The model's AnnData changed shape since set-up ({stats.n_cells} x {stats.n_vars} "
                f"-> {adata.n_obs} x {adata.n_vars}), e.g. subset in place. Pass the data "
                "explicitly (`model.predict(adata)` aligns any AnnData by gene name)."
            )
        check_input(adata, self._setup_args.get("layer"), self._setup_args.get("expression", "counts"))

    def _empty_on_model_genes(self, internal: AnnData) -> np.ndarray:
        """Cells of `internal` (registered) with no expression on any gene the model reads."""
        matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY) if internal is self.adata \
            else self.get_anndata_manager(internal).get_from_registry(REGISTRY_KEYS.X_KEY)
        pos = self._registered_var_names.get_indexer(self._read_genes)
        pos = np.sort(pos[pos >= 0])
        sums = np.zeros(internal.n_obs)
        for start, stop, block in iter_row_blocks(matrix):
            sums[start:stop] = np.asarray(block[:, pos].sum(axis=1)).ravel()
        return sums <= 0

    def _align(self, adata: AnnData, *, min_gene_overlap: float) -> AnnData:
        """Check `adata` and copy its cells, aligned to the registered genes, into a new AnnData."""
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
        layer = self._setup_args.get("layer")
        expression = self._setup_args.get("expression", "counts")
        try:
            matrix = check_input(adata, layer, expression)
        except KeyError as err:
            raise KeyError(
                f"{err.args[0]} The model was set up with layer={layer!r}: new data must hold the "
                "same kind of values in the same place."
            ) from None
        model_genes = self._read_genes
        aligned, present = self._align_matrix(matrix, adata, min_gene_overlap=min_gene_overlap)
        if expression == "counts" and self._library_over_all_genes:
            missing = self._registered_var_names[~present]
            n_other = int((~missing.isin(model_genes)).sum())
            if n_other > 0:
                warnings.warn(
                    f"{n_other} of the {len(present)} genes the model takes library sizes over are "
                    "missing from the data; cells are normalised over the genes present.",
                    UserWarning,
                    stacklevel=4,
                )
        obs = pd.DataFrame(index=adata.obs_names.copy())
        for key in self._covariate_columns():
            if key not in adata.obs:
                raise KeyError(f"adata.obs has no {key!r} column, which the model was set up with.")
            obs[key] = adata.obs[key].to_numpy()
        self._check_levels(obs)
        var = pd.DataFrame({PRESENT: present}, index=self._registered_var_names)
        internal = AnnData(X=aligned, obs=obs, var=var)
        if layer is not None:
            internal.layers[layer] = aligned
        return internal

    #: set-up arguments whose obs column must hold only levels seen in training when data are
    #: aligned (a model taking new batches through ``load_query_data`` leaves ``batch_key`` out)
    _known_levels_only: tuple[str, ...] = ("condition_key",)

    def _check_levels(self, obs: pd.DataFrame) -> None:
        """A clear error when a batch or condition column holds levels the model never saw."""
        from scattn.module._constants import CONDITION_KEY

        registry = {"batch_key": REGISTRY_KEYS.BATCH_KEY, "condition_key": CONDITION_KEY}
        for arg in self._known_levels_only:
            registry_key = registry[arg]
            key = self._setup_args.get(arg)
            if key is None or registry_key not in self.adata_manager.data_registry:
                continue
            known = pd.Index(self.adata_manager.get_state_registry(registry_key).categorical_mapping).astype(str)
            new = sorted(set(pd.Index(obs[key]).astype(str)) - set(known))
            if new:
                raise ValueError(
                    f"adata.obs[{key!r}] holds {len(new)} level(s) the model was not trained with: "
                    f"{', '.join(map(repr, new[:5]))} (known: {', '.join(map(repr, known[:10]))}). "
                    + ("Map them to known levels, or train on them "
                       "(scVI-like models: `load_query_data`)." if arg == "batch_key" else
                       "Choose one of the known conditions.")
                )

    #: whether the model's input depends on library sizes over every registered gene (a
    #: warning when new data lack some); rank-based tokens do not
    _library_over_all_genes = True

    def _align_matrix(self, matrix, adata: AnnData, *, min_gene_overlap: float):
        """`adata`'s `matrix` with the registered genes as columns, and which of them it has."""
        return align_to_genes(matrix, adata.var_names, self._registered_var_names,
                              model_genes=self._read_genes, min_overlap=min_gene_overlap)

    def _covariate_columns(self) -> list[str]:
        """obs columns besides labels that the model was set up with (batch, covariates)."""
        return covariate_keys(self._setup_args)

    def _unobserved_model_genes(self, internal: AnnData) -> np.ndarray:
        """Model genes that `internal` (from :meth:`_aligned`) zero-filled: not observed."""
        if internal is self.adata or PRESENT not in internal.var:
            return np.zeros(len(self.var_names_), dtype=bool)
        pos = pd.Index(internal.var_names).get_indexer(pd.Index(self.var_names_))
        present = internal.var[PRESENT].to_numpy(dtype=bool)
        return ~np.where(pos >= 0, present[np.maximum(pos, 0)], False)

    @torch.no_grad()  # not inference_mode: gradient attributions (CFAN) re-enable autograd inside
    def _run_inference(
        self,
        adata: AnnData,
        *,
        indices=None,
        batch_size: int | None = None,
        attention_top_k: int | None = None,
        keys: tuple[str, ...] = (MODULE_KEYS.LOGITS, MODULE_KEYS.Z),
        accumulate=None,
        **inference_kwargs,
    ) -> dict[str, np.ndarray | sparse.csr_matrix]:
        """Minibatch inference; concatenated outputs.

        With `attention_top_k`, the per-cell attention over the model's genes is kept as a
        CSR matrix holding each cell's top-k weights (``"attention"``); ``0`` keeps all.
        `accumulate`, if given, is called on every minibatch's inference output (with the
        untruncated attention), e.g. to sum attention per class in the same pass.
        """
        self.module.eval()
        loader = self._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size or settings.batch_size
        )
        out: dict[str, list] = {k: [] for k in keys}
        att_rows: list[sparse.csr_matrix] = []
        want_att = attention_top_k is not None
        if want_att or accumulate is not None:
            inference_kwargs["return_attention"] = True
        for tensors in loader:
            res = self.module.inference(**self.module._get_inference_input(tensors), **inference_kwargs)
            if accumulate is not None:
                accumulate(res)
            for k in keys:
                out[k].append(res[k].float().cpu().numpy())
            if want_att:
                att_rows.append(_top_k_csr(res[MODULE_KEYS.ATTENTION], attention_top_k))
        result = {k: np.concatenate(v) for k, v in out.items()}
        if want_att:
            result[MODULE_KEYS.ATTENTION] = sparse.vstack(att_rows, format="csr")
        return result


def _top_k_csr(weights: torch.Tensor, k: int) -> sparse.csr_matrix:
    """Each row's k largest *positive* entries of a ``(B, g)`` tensor as CSR.

    ``k=0`` keeps every entry, signs included.
    """
    weights = weights.float().cpu()
    n, g = weights.shape
    if not k:
        return sparse.csr_matrix(weights.numpy())
    k = min(k, g)
    vals, idx = torch.topk(weights, k, dim=1)
    indptr = np.arange(0, n * k + 1, k)
    mat = sparse.csr_matrix((vals.numpy().ravel(), idx.numpy().ravel(), indptr), shape=(n, g))
    mat.data[mat.data < 0] = 0  # a negative attribution is no evidence for the call
    mat.eliminate_zeros()
    mat.sort_indices()
    return mat
