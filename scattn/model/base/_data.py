"""Getting any AnnData into a trained model: validation, gene alignment, minibatch inference."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from scattn._compat import manager_stores
from scattn._progress import progress
from scattn._quiet import quiet, user_stacklevel
from scattn._settings import settings
from scattn.data import (
    check_expression,
    check_input,
    check_nonempty_cells,
    check_not_empty,
    check_var_names,
    gene_selector,
    get_matrix,
    is_backed,
    iter_row_blocks,
    read_rows,
    select_columns,
)
from scattn.module import MODULE_KEYS

#: column of a private aligned AnnData's ``var``: whether the user's data held the gene
PRESENT = "_scattn_present"

logger = logging.getLogger(__name__)


@dataclass
class _Alignment:
    """What aligning an AnnData to a model needs, checked once; its cells are read later."""

    matrix: object  # the user's matrix (X or the layer), in memory or on disk
    where: str  # its name in messages
    expression: str
    selector: sparse.csr_matrix  # data genes x registered genes
    present: np.ndarray  # registered genes the data hold
    obs: pd.DataFrame  # the covariate columns the model was set up with


def _positions(indices, n: int) -> np.ndarray:
    """`indices` (positions or a boolean mask) as an array of positions."""
    idx = np.asarray(indices).ravel()
    if idx.dtype == bool:
        if len(idx) != n:
            raise ValueError(f"A boolean indices mask needs {n} entries, got {len(idx)}.")
        return np.flatnonzero(idx)
    return idx.astype(np.int64)


class _Outputs:
    """Per-chunk inference outputs gathered into arrays allocated once for all `n` cells (no
    list of parts and concatenated copy side by side); sparse outputs are stacked at the end."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.dense: dict[str, np.ndarray] = {}
        self.sparse: dict[str, list] = {}

    def add(self, start: int, part: dict) -> None:
        for key, value in part.items():
            if sparse.issparse(value):
                self.sparse.setdefault(key, []).append(value)
                continue
            if key not in self.dense:
                self.dense[key] = np.empty((self.n, *value.shape[1:]), dtype=value.dtype)
            self.dense[key][start:start + len(value)] = value

    def result(self) -> dict:
        out = dict(self.dense)
        for key in list(self.sparse):
            out[key] = _stack_rows(self.sparse.pop(key))
        return out


def _stack_rows(parts: list) -> sparse.csr_matrix:
    """``sparse.vstack(parts)`` as CSR, emptying `parts` as it goes: the stacked matrix and one
    part in memory at a time, not all parts and the result."""
    if len(parts) == 1:
        return sparse.csr_matrix(parts.pop())
    parts[:] = [sparse.csr_matrix(p) for p in parts]
    n_rows = sum(p.shape[0] for p in parts)
    nnz = sum(p.nnz for p in parts)
    dtype = np.result_type(*[p.dtype for p in parts])
    data = np.empty(nnz, dtype=dtype)
    indices = np.empty(nnz, dtype=np.int64 if nnz > np.iinfo(np.int32).max else np.int32)
    indptr = np.empty(n_rows + 1, dtype=np.int64 if nnz > np.iinfo(np.int32).max else np.int32)
    indptr[0] = 0
    row = at = 0
    n_cols = parts[0].shape[1]
    while parts:
        p = parts.pop(0)
        data[at:at + p.nnz] = p.data
        indices[at:at + p.nnz] = p.indices
        indptr[row + 1:row + 1 + p.shape[0]] = p.indptr[1:] + at
        row, at = row + p.shape[0], at + p.nnz
        del p
    return sparse.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


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
        written to. (:meth:`_infer` streams large data instead of copying it whole.)
        """
        if adata is None or adata is self.adata:
            self._check_own_data()
            yield self.adata
            return
        with self._registered(self._align(adata, min_gene_overlap=min_gene_overlap)) as internal:
            yield internal

    @contextmanager
    def _registered(self, internal: AnnData) -> Iterator[AnnData]:
        """Register a private aligned AnnData for the duration of the block."""
        with quiet():  # scvi announces the set-up transfer on every new AnnData
            self._validate_anndata(internal)
        try:
            yield internal
        finally:
            # transferred managers live only in this instance's store (scvi's
            # `deregister_manager` looks in the class store and cannot find them)
            uuid = internal.uns.get("_scvi_uuid")
            per_instance, per_class = manager_stores(self)
            per_instance.get(self.id, {}).pop(uuid, None)
            per_class.pop(uuid, None)

    def _infer(self, adata: AnnData | None, *, indices=None, min_gene_overlap: float = 0.5,
               with_empty: bool = False, desc: str | None = None, **kwargs) -> dict:
        """:meth:`_run_inference` on any AnnData, streamed: cells are read, aligned and run
        :attr:`scattn.settings.chunk_size` at a time, so a backed (or zarr) AnnData is never
        loaded whole and an in-memory one never copied whole; outputs are concatenated in the
        order of `indices`. `with_empty` adds ``"empty"``: cells with no count on the model's
        genes. A progress bar (`desc`) shows where there is more than one chunk.
        """
        if adata is None or adata is self.adata:
            with self._aligned(adata) as internal:
                out = self._run_inference(internal, indices=indices, **kwargs)
                if with_empty:
                    empty = self._empty_on_model_genes(internal)
                    out["empty"] = empty if indices is None else empty[_positions(indices, len(empty))]
            return out
        plan = self._alignment_plan(adata, min_gene_overlap=min_gene_overlap)
        rows = np.arange(adata.n_obs) if indices is None else _positions(indices, adata.n_obs)
        step = settings.chunk_size
        out = _Outputs(len(rows))
        with progress(total=len(rows), desc=desc or f"{type(self).__name__}", unit="cells",
                      show=len(rows) > step) as bar:
            for start in range(0, len(rows), step):
                chunk = rows[start:start + step]
                with self._registered(self._aligned_rows(plan, chunk)) as internal:
                    part = self._run_inference(internal, **kwargs)
                    if with_empty:
                        part["empty"] = self._empty_on_model_genes(internal)
                out.add(start, part)
                bar.update(len(chunk))
        return out.result()

    def _reduce(self, adata: AnnData | None, run, *, indices=None, batch_size: int | None = None,
                min_gene_overlap: float = 0.5, desc: str | None = None) -> dict[str, torch.Tensor]:
        """Totals over cells, read as :meth:`_infer` reads them (streamed, token models sorted
        by length): `run` maps a minibatch's tensors to a dict of tensors, each already summed
        over the minibatch's cells; returns their sums over all cells (float64, on the CPU)."""
        totals: dict[str, torch.Tensor] = {}

        def add(res: dict) -> None:
            for key, value in res.items():
                value = torch.as_tensor(value).detach().double().cpu()
                totals[key] = value if key not in totals else totals[key] + value

        self._infer(adata, indices=indices, keys=(), run=run, accumulate=add, batch_size=batch_size,
                    min_gene_overlap=min_gene_overlap, desc=desc)
        return totals

    def _obs_names_of(self, adata: AnnData | None, indices=None) -> pd.Index:
        """Names of the cells `indices` of `adata` (`None`: the model's own AnnData)."""
        names = (self.adata if adata is None else adata).obs_names
        return names if indices is None else names[_positions(indices, len(names))]

    def _align(self, adata: AnnData, *, min_gene_overlap: float, **plan_kwargs) -> AnnData:
        """Check `adata` and copy its cells, aligned to the registered genes, into a new AnnData."""
        plan = self._alignment_plan(adata, min_gene_overlap=min_gene_overlap, **plan_kwargs)
        return self._aligned_rows(plan, None)

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

    def _blank_empty_cells(self, values: np.ndarray, empty: np.ndarray, what: str) -> np.ndarray:
        """`values` (cells x ...) with NaN rows for the cells with no counts on any of the
        model's genes (`empty`), and one warning with their number: the rule ``predict`` follows
        (there it labels them ``"Unknown"``), for every output computed from no input."""
        if not empty.any():
            return values
        warnings.warn(
            f"{int(empty.sum())} cells have no counts on any of the model's "
            f"{len(self._read_genes)} genes; their {what} rows are NaN.", UserWarning, stacklevel=user_stacklevel(),
        )
        values = np.asarray(values, dtype=np.result_type(values.dtype, np.float32))
        values[empty] = np.nan
        return values

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

    def _alignment_plan(self, adata: AnnData, *, min_gene_overlap: float) -> _Alignment:
        """Every check on `adata` that needs no expression value, and how to align its genes.

        An in-memory matrix's values are checked here too (one pass); a backed one's as its
        cells are read (:meth:`_aligned_rows`), so that large data are read once.
        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
        layer = self._setup_args.get("layer")
        expression = self._setup_args.get("expression", "counts")
        try:
            if is_backed(get_matrix(adata, layer)):
                check_not_empty(adata)
                check_var_names(adata.var_names)
                matrix = get_matrix(adata, layer)
            else:
                matrix = check_input(adata, layer, expression)
        except KeyError as err:
            raise KeyError(
                f"{err.args[0]} The model was set up with layer={layer!r}: new data must hold the "
                "same kind of values in the same place."
            ) from None
        model_genes = self._read_genes
        selector, present = self._gene_selector(adata, min_gene_overlap=min_gene_overlap)
        if expression == "counts" and self._library_over_all_genes:
            missing = self._registered_var_names[~present]
            n_other = int((~missing.isin(model_genes)).sum())
            if n_other > 0:
                warnings.warn(
                    f"{n_other} of the {len(present)} genes the model takes library sizes over are "
                    "missing from the data; cells are normalised over the genes present.",
                    UserWarning,
                    stacklevel=user_stacklevel(),
                )
        obs = pd.DataFrame(index=adata.obs_names.copy())
        for key in self._covariate_columns():
            if key not in adata.obs:
                raise KeyError(f"adata.obs has no {key!r} column, which the model was set up with.")
            obs[key] = adata.obs[key].to_numpy()
        self._check_levels(obs)
        where = f"adata.layers[{layer!r}]" if layer else "adata.X"
        return _Alignment(matrix, where, expression, selector, present, obs)

    def _aligned_rows(self, plan: _Alignment, rows: np.ndarray | None) -> AnnData:
        """A private AnnData of the cells `rows` (`None`: all) aligned as `plan` says."""
        layer = self._setup_args.get("layer")
        block = plan.matrix if rows is None else read_rows(plan.matrix, rows)
        obs = plan.obs if rows is None else plan.obs.iloc[rows]
        if is_backed(block):  # the whole of a backed matrix: a block of rows at a time
            parts = []
            for start, stop, part in iter_row_blocks(block):
                check_expression(part, plan.expression, where=plan.where)
                check_nonempty_cells(part, obs.index[start:stop])
                parts.append(select_columns(part, plan.selector))
            aligned = sparse.vstack(parts, format="csr", dtype=np.float32) if parts else \
                sparse.csr_matrix((0, plan.selector.shape[1]), dtype=np.float32)
        else:
            if is_backed(plan.matrix):  # a block just read from disk: its values not yet checked
                check_expression(block, plan.expression, where=plan.where)
                check_nonempty_cells(block, obs.index)
            aligned = select_columns(block, plan.selector)
        var = pd.DataFrame({PRESENT: plan.present}, index=self._registered_var_names)
        obs = obs.copy()
        if not obs.index.is_unique:  # cells asked for twice: the private copy needs unique names
            obs.index = pd.RangeIndex(len(obs)).astype(str)
        internal = AnnData(X=aligned, obs=obs, var=var)
        if layer is not None:
            internal.layers[layer] = aligned
        return internal

    #: set-up arguments whose obs column must hold only levels seen in training when data are
    #: aligned (a model taking new batches through ``load_query_data`` leaves ``batch_key`` out)
    _known_levels_only: tuple[str, ...] = ("condition_key",)

    def _check_levels(self, obs: pd.DataFrame) -> None:
        """A clear error when a batch or condition column holds levels the model never saw."""
        from scattn.module import CONDITION_KEY

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

    def _gene_selector(self, adata: AnnData, *, min_gene_overlap: float):
        """How `adata`'s genes map onto the registered genes (a
        :func:`~scattn.data.gene_selector`), and which of them it has."""
        return gene_selector(adata.var_names, self._registered_var_names,
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

    #: cells per inference minibatch when none is given, as a multiple of
    #: :attr:`scattn.settings.batch_size`: models whose activations per cell are small (CFAN,
    #: SIMS) run bigger minibatches, where matrix products are faster per cell
    _inference_batch_factor = 1

    def _inference_batch_size(self) -> int:
        return settings.batch_size * self._inference_batch_factor

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
        run=None,
        **inference_kwargs,
    ) -> dict[str, np.ndarray | sparse.csr_matrix]:
        """Minibatch inference; concatenated outputs.

        With `attention_top_k`, the per-cell attention over the model's genes is kept as a
        CSR matrix holding each cell's top-k weights (``"attention"``); ``0`` keeps all.
        `accumulate`, if given, is called on every minibatch's inference output (with the
        untruncated attention), e.g. to sum attention per class in the same pass. `run`, if
        given, replaces the module's ``inference`` (with `inference_kwargs`): it maps a
        minibatch's tensors to its outputs.
        """
        self.module.eval()
        loader = self._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size or self._inference_batch_size()
        )
        out: dict[str, list] = {k: [] for k in keys}
        att_rows: list[sparse.csr_matrix] = []
        want_att = attention_top_k is not None
        if run is None and (want_att or accumulate is not None):
            inference_kwargs["return_attention"] = True
        for tensors in loader:
            if run is None:
                res = self.module.inference(**self.module._get_inference_input(tensors), **inference_kwargs)
            else:
                res = run(tensors)
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
    indptr = np.arange(0, n * k + 1, k, dtype=np.int32 if n * k < 2**31 else np.int64)
    mat = sparse.csr_matrix((vals.numpy().ravel(), idx.to(torch.int32).numpy().ravel(), indptr), shape=(n, g))
    mat.data[mat.data < 0] = 0  # a negative attribution is no evidence for the call
    mat.eliminate_zeros()
    mat.sort_indices()
    return mat
