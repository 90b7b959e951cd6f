"""scGPT's gene programs: Leiden clusters of a kNN graph of the model's gene embeddings
(Cui et al. 2024, Figure 5)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from scattn._docs import scattn_dsp
from scattn._quiet import user_stacklevel
from scattn._read import check_method, is_int
from scattn._read import model_genes as model_gene_ids
from scattn._write import write_results
from scattn.data import gene_ids

from ._fitted import check_fitted

logger = logging.getLogger(__name__)

__all__ = ["gene_programs"]


def _chosen_genes(adata: AnnData, genes) -> np.ndarray:
    """Positions in ``adata.var_names`` of `genes` (names, or a boolean mask over the genes);
    every gene when `None`."""
    if genes is None:
        return np.arange(adata.n_vars)
    if isinstance(genes, str):
        genes = [genes]
    values = np.asarray(genes)
    if values.dtype == bool:
        if values.shape != (adata.n_vars,):
            raise ValueError(
                f"A boolean `genes` mask must have one entry per gene of adata "
                f"({adata.n_vars}), got shape {values.shape}."
            )
        return np.flatnonzero(values)
    names = pd.Index([str(g) for g in values.ravel()])
    if names.has_duplicates:
        names = names.unique()
    pos = pd.Index(adata.var_names.astype(str)).get_indexer(names)
    if (pos < 0).any():
        unknown = names[pos < 0].tolist()
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise ValueError(
            f"{len(unknown)} of the genes in `genes` are not in adata.var_names: "
            f"{unknown[:5]}{more}. Give genes by adata.var_names."
        )
    if len(pos) == 0:
        raise ValueError("`genes` is empty; give at least some genes, or `None` for all.")
    return np.sort(pos)


def match_genes(
    adata: AnnData,
    model_genes: pd.Index,
    *,
    genes,
    gene_id_key: str | None,
    need: int,
    tool: str,
) -> tuple[np.ndarray, pd.Index]:
    """Match the chosen genes of `adata` to the model's gene IDs.

    Returns ``(positions, ids)``: the chosen genes the model has (in adata's order), as
    positions in ``adata.var`` and as the model's IDs. Genes outside the model are dropped
    with a warning; fewer than `need` left, or two chosen genes with one ID, is a `ValueError`.
    """
    pos = _chosen_genes(adata, genes)
    ids = gene_ids(adata, gene_id_key)[pos]
    if ids.has_duplicates:
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        where = f"adata.var[{gene_id_key!r}]" if gene_id_key else "adata.var_names"
        raise ValueError(
            f"Gene IDs in {where} must be unique among the genes used; duplicated: "
            f"{dup}. Make them unique (`adata.var_names_make_unique()`) or pass "
            "`genes=` without the duplicates."
        )
    known = ids.isin(model_genes)
    n = int(known.sum())
    if n < need:
        where = f"adata.var[{gene_id_key!r}]" if gene_id_key else "adata.var_names"
        hint = (
            ""
            if n
            else " Check that they are the same kind of ID (symbols vs Ensembl IDs), "
            "or pass `gene_id_key=` naming the adata.var column with the model's IDs."
        )
        raise ValueError(
            f"{tool}: only {n} of the {len(ids)} genes chosen from adata are in the model's "
            f"{len(model_genes)} genes, need at least {need}. The model's genes are like "
            f"{', '.join(model_genes[:3])}; {where} like {', '.join(ids[:3])}.{hint}"
        )
    if n < len(ids):
        warnings.warn(
            f"{tool}: {len(ids) - n} of the {len(ids)} genes chosen from adata are not "
            "among the model's genes and are left out.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return pos[known], ids[known]


def _leiden(
    embedding: np.ndarray, *, n_neighbors: int, resolution: float, metric: str, random_state: int
) -> np.ndarray:
    """Leiden cluster codes of the rows of `embedding` on their kNN graph (scanpy)."""
    import scanpy as sc

    genes = AnnData(np.ascontiguousarray(embedding, dtype=np.float32))
    sc.pp.neighbors(
        genes, n_neighbors=n_neighbors, use_rep="X", metric=metric, random_state=random_state
    )
    sc.tl.leiden(
        genes,
        resolution=resolution,
        random_state=random_state,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        key_added="program",
    )
    return genes.obs["program"].cat.codes.to_numpy()


@scattn_dsp.dedent
def gene_programs(
    adata: AnnData,
    model,
    *,
    genes: Sequence[str] | np.ndarray | pd.Series | None = None,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    min_size: int = 3,
    metric: str = "cosine",
    gene_id_key: str | None = None,
    random_state: int = 0,
    key_added: str = "gene_programs",
    copy: bool = False,
) -> AnnData | None:
    """Gene programs from an scGPT-like model's gene embeddings (Cui et al. 2024, Figure 5).

    The workflow of scGPT's gene regulatory network analysis: the model's learned gene token
    embeddings (:meth:`get_gene_embeddings`) of the chosen genes are the nodes of a
    k-nearest-neighbour graph (:func:`scanpy.pp.neighbors` with `metric`), which is clustered
    with Leiden (:func:`scanpy.tl.leiden`, igraph flavour, 2 iterations, undirected). A program
    is a cluster with at least `min_size` genes; genes that embed close to one another, e.g.
    the HLA class II genes or the CD3 genes, end up in one program. Deterministic for a given
    `random_state`.

    Parameters
    ----------
    adata
        AnnData whose genes are clustered (e.g. the data the model was trained on).
    model
        Trained scGPT-like model with ``get_gene_embeddings()`` (e.g. :class:`scattn.model.SCGPT`):
        a DataFrame genes x dimensions indexed by the model's gene IDs.
    genes
        Genes to cluster, by ``adata.var_names`` (e.g. the highly variable genes), or a boolean
        mask over ``adata.var`` (e.g. ``adata.var["highly_variable"]``). `None`: every gene of
        `adata` the model has. Genes the model lacks are left out with a warning; a name not
        in ``adata.var_names`` is a `ValueError`.
    n_neighbors
        Neighbours per gene in the kNN graph; fewer than ``n_neighbors + 1`` matched genes is a
        `ValueError`.
    resolution
        Leiden resolution: higher gives more, smaller programs.
    min_size
        Smallest cluster kept as a program; genes of smaller clusters get no program.
    metric
        Distance between embeddings for the kNN graph (any metric of
        :func:`scanpy.pp.neighbors`).
    gene_id_key
        Column of ``adata.var`` holding the model's gene IDs (e.g. Ensembl IDs). `None`:
        ``adata.var_names`` are the model's IDs.
    random_state
        Seed of the kNN graph and of Leiden.
    key_added
        Key in ``adata.var`` and ``adata.uns``.
    %(copy)s

    Returns
    -------
    `None`, or a copy of `adata` with `copy=True`. Writes:

    ``adata.var[key_added]``
        Categorical: each gene's program, ``"program 1"`` (the largest), ``"program 2"``, ...
        (categories in that order; ties by the first gene's position in `adata`); NaN for genes
        not clustered (not chosen, or not in the model) or in a cluster smaller than `min_size`.
    ``adata.uns[key_added]["programs"]``
        Dict program -> list of its genes (``adata.var_names``, in adata's order).
    ``adata.uns[key_added]["params"]``
        ``model_class``, ``n_neighbors``, ``resolution``, ``min_size``, ``metric``,
        ``gene_id_key``, ``random_state``, ``n_genes`` (genes clustered), ``n_programs``.

    Examples
    --------
    >>> sc.pp.highly_variable_genes(adata, n_top_genes=1200, flavor="seurat_v3", layer="counts")
    >>> sa.tl.gene_programs(adata, model, genes=adata.var["highly_variable"])
    >>> adata.uns["gene_programs"]["programs"]["program 1"]
    >>> sa.pl.gene_programs(adata, model, genes=["HLA-DRA", "CD3D"])
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    check_method(model, "get_gene_embeddings", "gene_programs")
    check_fitted(model, "gene_programs")
    if not is_int(n_neighbors, 2):
        raise ValueError(f"n_neighbors must be an integer >= 2, got {n_neighbors!r}.")
    if not is_int(min_size, 1):
        raise ValueError(f"min_size must be an integer >= 1, got {min_size!r}.")
    if isinstance(resolution, bool) or not np.isfinite(resolution) or resolution <= 0:
        raise ValueError(f"resolution must be a positive number, got {resolution!r}.")

    embeddings = model.get_gene_embeddings()
    model_genes = model_gene_ids(embeddings, "gene embeddings")
    pos, ids = match_genes(
        adata,
        model_genes,
        genes=genes,
        gene_id_key=gene_id_key,
        need=max(2, min_size),
        tool="gene_programs",
    )
    if len(ids) < n_neighbors + 1:
        raise ValueError(
            f"gene_programs: n_neighbors={n_neighbors} needs at least n_neighbors + 1 = "
            f"{n_neighbors + 1} genes, and {len(ids)} of the chosen genes are the model's. Pass "
            f"n_neighbors={len(ids) - 1} or less (or choose more genes)."
        )
    table = embeddings.set_axis(model_genes, axis=0)
    if table.index.has_duplicates:
        raise ValueError("The model's gene embeddings have repeated gene IDs.")
    vectors = table.loc[ids].to_numpy(dtype=float)
    if not np.isfinite(vectors).all():
        raise ValueError("The model's gene embeddings contain NaN or infinite values.")
    codes = _leiden(
        vectors,
        n_neighbors=int(n_neighbors),
        resolution=float(resolution),
        metric=metric,
        random_state=random_state,
    )

    # programs: clusters of at least min_size genes, largest first (ties: first gene first)
    clusters = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    clusters = sorted((m for m in clusters if len(m) >= min_size), key=lambda m: (-len(m), m[0]))
    labels = [f"program {i + 1}" for i in range(len(clusters))]
    names = adata.var_names.astype(str)
    programs = {lab: names[pos[m]].tolist() for lab, m in zip(labels, clusters, strict=True)}
    program_codes = np.full(adata.n_vars, -1)
    for i, members in enumerate(clusters):
        program_codes[pos[members]] = i
    column = pd.Series(
        pd.Categorical.from_codes(program_codes, categories=pd.Index(labels, dtype=object)),
        index=adata.var_names,
    )
    if not programs:
        logger.warning(
            "gene_programs: no cluster has %d or more genes; try a lower min_size or resolution.",
            min_size,
        )
    params = {
        "model_class": type(model).__name__,
        "n_neighbors": int(n_neighbors),
        "resolution": float(resolution),
        "min_size": int(min_size),
        "metric": str(metric),
        "gene_id_key": gene_id_key,
        "random_state": random_state,
        "n_genes": len(ids),
        "n_programs": len(programs),
    }
    adata = adata.copy() if copy else adata
    write_results(
        adata,
        [("var", key_added, column), ("uns", key_added, {"programs": programs, "params": params})],
        by="sa.tl.gene_programs",
    )
    logger.info(
        "gene_programs: %d genes, %d programs (%d genes in them)",
        len(ids),
        len(programs),
        sum(len(m) for m in clusters),
    )
    return adata if copy else None
