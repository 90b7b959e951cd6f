"""Heat map of scGPT-style gene programs: the cosine similarity of the model's gene embeddings,
ordered and outlined by program (Cui et al. 2024, Figure 5)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from scattn._docs import scattn_dsp
from scattn._read import check_method, model_genes
from scattn.data import gene_ids

from ._base import finish, new_axes

logger = logging.getLogger(__name__)

__all__ = ["gene_programs"]


def _program_order(name: str) -> tuple[float, str]:
    """``"program 12"`` sorts after ``"program 2"`` (the stored dict may come back sorted)."""
    match = re.search(r"(\d+)$", str(name))
    return (int(match.group(1)) if match else np.inf, str(name))


def _stored_programs(adata: AnnData, key: str) -> tuple[dict[str, list[str]], dict]:
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or "programs" not in entry:
        raise KeyError(
            f"No gene programs at adata.uns[{key!r}]; run "
            f"`sa.tl.gene_programs(adata, model, key_added={key!r})` first."
        )
    stored = entry["programs"]
    programs = {str(p): [str(g) for g in np.atleast_1d(stored[p])] for p in stored}
    programs = {p: programs[p] for p in sorted(programs, key=_program_order)}
    return programs, dict(entry.get("params", {}))


def _select(programs: dict[str, list[str]], chosen, genes, key: str) -> tuple[list[str], set[str]]:
    """The programs to show (in program order) and the genes asked for."""
    if not programs:
        raise ValueError(
            f"adata.uns[{key!r}] holds no gene program (no cluster reached "
            "min_size); rerun `sa.tl.gene_programs` with a lower min_size."
        )
    wanted: set[str] = set()
    if chosen is not None:
        chosen = [str(p) for p in ([chosen] if isinstance(chosen, str) else chosen)]
        unknown = [p for p in chosen if p not in programs]
        if unknown or not chosen:
            shown = ", ".join(list(programs)[:8]) + (", ..." if len(programs) > 8 else "")
            raise ValueError(
                f"programs must be among adata.uns[{key!r}]['programs'] ({shown}), "
                f"got {unknown or chosen!r}."
            )
        wanted.update(chosen)
    asked: set[str] = set()
    if genes is not None:
        asked = {str(g) for g in ([genes] if isinstance(genes, str) else genes)}
        if not asked:
            raise ValueError("`genes` is empty; give gene names or leave it `None`.")
        owner = {g: p for p, members in programs.items() for g in members}
        orphans = sorted(asked - set(owner))
        if orphans:
            raise ValueError(
                f"Genes in no program of adata.uns[{key!r}]: {orphans[:5]}. Give "
                f"genes by adata.var_names that adata.var[{key!r}] assigns a program."
            )
        wanted.update(owner[g] for g in asked)
    if not wanted:
        wanted = set(programs)
    return [p for p in programs if p in wanted], asked


def _allot(sizes: list[int], total: int) -> list[int]:
    """Genes shown per program: all when they fit in `total`, else shares in proportion to
    size (largest remainders), at least ``min(size, 2)`` each."""
    sizes_arr = np.asarray(sizes)
    if sizes_arr.sum() <= total:
        return sizes
    floor = np.minimum(sizes_arr, 2)
    spare = max(total - int(floor.sum()), 0)
    extra = sizes_arr - floor
    share = spare * extra / max(int(extra.sum()), 1)
    quota = floor + np.floor(share).astype(int)
    left = total - int(quota.sum())
    for i in np.argsort(-(share - np.floor(share)), kind="stable")[: max(left, 0)]:
        quota[i] += 1
    return np.minimum(quota, sizes_arr).tolist()


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


@scattn_dsp.dedent
def gene_programs(
    adata: AnnData,
    model=None,
    *,
    key: str = "gene_programs",
    programs: str | Sequence[str] | None = None,
    genes: str | Sequence[str] | None = None,
    max_genes: int = 60,
    cmap: str = "RdBu_r",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Heat map of the cosine similarity of the gene embeddings within and across gene programs.

    The genes of the chosen programs of :func:`scattn.tl.gene_programs`, grouped by program
    (largest first; within a program, the genes most similar to the rest of their program
    first), their pairwise cosine similarity coloured (red: similar, blue: opposed; the
    diagonal, always 1, in grey). Each program is outlined on the diagonal and named along the
    top; tightly knit programs are dark red squares.

    Parameters
    ----------
    adata
        AnnData with the result of :func:`scattn.tl.gene_programs`.
    model
        The model the programs were computed with (``get_gene_embeddings``, e.g.
        :class:`scattn.model.SCGPT`): its embeddings give the similarities. Required.
    key
        The tool's ``key_added``.
    programs
        Program or programs to show (``"program 1"``, ...). `None`: every program, unless
        `genes` is given.
    genes
        Genes (``adata.var_names``) whose programs to show (added to `programs`), e.g.
        ``["HLA-DRA", "CD3D"]``; their names are drawn in bold.
    max_genes
        Most genes shown. Beyond it, each program shows its most typical genes (most similar
        to the rest of the program), in proportion to its size and at least two, and the genes
        in `genes` always.
    cmap
        Diverging colour map, centred at 0.
    %(show)s

    Examples
    --------
    >>> sa.tl.gene_programs(adata, model)
    >>> sa.pl.gene_programs(adata, model, genes=["HLA-DRA", "CD3D"])
    """
    if model is None:
        raise ValueError(
            "sa.pl.gene_programs needs the model the programs were computed with, for its gene "
            "embeddings: call `sa.pl.gene_programs(adata, model)`."
        )
    check_method(model, "get_gene_embeddings", "sa.pl.gene_programs")
    if isinstance(max_genes, bool) or not isinstance(max_genes, int | np.integer) or max_genes < 2:
        raise ValueError(f"max_genes must be an integer >= 2, got {max_genes!r}.")
    stored, params = _stored_programs(adata, key)
    shown, asked = _select(stored, programs, genes, key)
    if len(shown) > max_genes // 2:  # at least two genes per program
        logger.warning(
            "sa.pl.gene_programs: showing the %d largest of %d programs (max_genes=%d).",
            max_genes // 2,
            len(shown),
            max_genes,
        )
        shown = shown[: max_genes // 2]

    # embeddings of every member of the shown programs, by the IDs the tool matched with
    members = [stored[p] for p in shown]
    names = [g for group in members for g in group]
    id_of = pd.Series(
        gene_ids(adata, params.get("gene_id_key")), index=adata.var_names.astype(str)
    )
    id_of = id_of[~id_of.index.duplicated()]
    absent = [g for g in names if g not in id_of.index]
    if absent:
        raise ValueError(
            f"Genes of the programs are no longer in adata.var_names: {absent[:5]}; "
            "rerun `sa.tl.gene_programs`."
        )
    embeddings = model.get_gene_embeddings()
    table = embeddings.set_axis(model_genes(embeddings, "gene embeddings"), axis=0)
    ids = id_of.loc[names]
    lacking = [g for g, i in zip(names, ids, strict=True) if i not in table.index]
    if lacking:
        raise ValueError(
            f"The model has no embedding for genes of the programs ({lacking[:5]}); "
            "pass the model the programs were computed with."
        )
    unit = dict(zip(names, _unit(table.loc[ids].to_numpy(dtype=float)), strict=True))

    # within a program, most typical first; keep at most the allotted genes (asked ones always)
    quotas = _allot([len(m) for m in members], max_genes)
    order: list[str] = []
    bounds: list[tuple[int, int, str]] = []
    for program, group, quota in zip(shown, members, quotas, strict=True):
        vectors = np.stack([unit[g] for g in group])
        typical = (vectors @ vectors.T).sum(1) - 1.0
        ranked = [group[i] for i in np.argsort(-typical, kind="stable")]
        keep = [g for g in ranked if g in asked]
        keep += [g for g in ranked if g not in asked][: max(quota - len(keep), 0)]
        keep = [g for g in ranked if g in keep]
        bounds.append((len(order), len(order) + len(keep), program))
        order += keep
    n, n_total = len(order), len(names)
    u = np.stack([unit[g] for g in order])
    similarity = np.clip(u @ u.T, -1.0, 1.0)
    off = np.ma.masked_array(similarity, mask=np.eye(n, dtype=bool))
    vmax = float(np.abs(off).max()) if n > 1 else 1.0
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0

    side = float(np.clip(0.17 * n + 3.0, 4.5, 14.0))
    fig, axis = new_axes(ax, (side + 1.0, side))
    bbox = axis.get_window_extent()
    cell_pt = min(bbox.width, bbox.height) / fig.dpi * 72 / max(n, 1)  # points per gene
    fontsize = float(np.clip(0.8 * cell_pt, 4.0, 10.0))
    colours = plt.get_cmap(cmap).with_extremes(bad="0.8")
    im = axis.imshow(off, cmap=colours, vmin=-vmax, vmax=vmax, interpolation="nearest")
    axis.grid(False)  # a heatmap under scanpy's style (axes.grid on) gets no grid lines
    for start, end, _ in bounds:
        if start > 0:
            axis.axhline(start - 0.5, color="0.2", lw=0.6)
            axis.axvline(start - 0.5, color="0.2", lw=0.6)
        axis.add_patch(
            Rectangle(
                (start - 0.5, start - 0.5),
                end - start,
                end - start,
                fill=False,
                ec="black",
                lw=1.6,
            )
        )
    axis.set_xticks(np.arange(n), order, rotation=90, fontsize=fontsize)
    axis.set_yticks(np.arange(n), order, fontsize=fontsize)
    for label in [*axis.get_xticklabels(), *axis.get_yticklabels()]:
        if label.get_text() in asked:
            label.set_fontweight("bold")
    axis.tick_params(length=0)
    # program names along the top, turned when a block is narrower than its name
    top = axis.secondary_xaxis("top")
    centres = [(start + end - 1) / 2 for start, end, _ in bounds]
    label_size = float(np.clip(fontsize + 2.0, 8.0, 10.0))
    narrowest = min(end - start for start, end, _ in bounds) * cell_pt
    longest = max(len(p) for p in shown) * 0.6 * label_size
    top.set_xticks(centres, shown, fontsize=label_size, rotation=0 if longest <= narrowest else 90)
    top.tick_params(length=0)
    for spine in (*axis.spines.values(), *top.spines.values()):
        spine.set_visible(False)
    title = "Gene programs: cosine similarity of gene embeddings"
    if n < n_total:
        title += f"\n({n} of {n_total} genes shown, the most typical of each program)"
    axis.set_title(title, fontsize=10)
    cbar = fig.colorbar(im, ax=axis, fraction=0.04, pad=0.02)
    cbar.set_label("cosine similarity (diagonal in grey)")
    cbar.outline.set_visible(False)
    if ax is None:
        fig.tight_layout()
    return finish(fig, axis, show=show, return_fig=return_fig, ax_given=ax is not None)
