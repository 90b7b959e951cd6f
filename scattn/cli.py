"""``scattn annotate``: label a new study from a labelled reference, in one command.

::

    scattn annotate                                   # the embedded example (see below)
    scattn annotate REFERENCE.h5ad QUERY.h5ad --labels cell_type [--model CFAN] [--layer counts]
                    [--out DIR] [--load MODEL_DIR] [--save-model] [--max-epochs N] [--seed S]
                    [--p-unknown P] [--no-adapt] [--quiet] [--overwrite]

It trains the model on the reference (or ``--load``\\ s a saved one), adapts it to the query
(``Model.load_query_data`` on the unlabelled query, then ``train``: the reference's cells and
the reference model's most confident calls on the query; ``--no-adapt`` predicts with the
reference model as it is), predicts the query (genes matched by name), flags as ``Unknown``
the query cells less confident than all but a share ``--p-unknown`` of held-out reference cells
(of the reference model), and writes into ``--out``:

- ``annotated.h5ad``: the query with the predictions (``obs["<key>_prediction"]``,
  ``obs["<key>_confidence"]``, ``obsm["X_<key>"]``, the attribution layer, the markers in
  ``uns["<key>_markers"]``) and ``obsm["X_umap"]`` on the model's embedding;
- ``markers.csv``: the attention-derived markers per predicted type
  (:func:`scanpy.get.rank_genes_groups_df` of ``uns["<key>_markers"]``);
- ``report.md`` and ``figures/``: the query's UMAP coloured by prediction and by confidence,
  a marker dot plot, the share of each predicted type and of ``Unknown``, and, when the query
  has the labels column too, the confusion matrix and macro F1.

Everything is checked before anything is written, and the files are written into a temporary
folder moved into place at the end: a failed run leaves nothing half-written. The input files
are never changed.

With no files it runs on an embedded example: scanpy's bundled ``pbmc68k_reduced`` (its
log-normalised ``.raw``, 765 genes, ``bulk_labels``), split by a stated rule: within each cell
type, the cells at even positions (in the file's order) are the reference and the others the
query.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: models that annotate (classifiers), by the name ``--model`` takes
MODELS = ("CFAN", "CGRAN", "SIMS", "Geneformer", "SCGPT")
#: the model ``scattn annotate`` uses by default: the most accurate scattn classifier on new
#: data in the benchmarks (``benchmarks/results/transfer.md``, ``benchmark.md``)
DEFAULT_MODEL = "CFAN"
EXAMPLE = "pbmc68k_reduced"


class AnnotateError(ValueError):
    """A problem with the command's input, said plainly (the command exits with status 2)."""


@dataclass
class Inputs:
    """The checked inputs of one run."""

    reference: object
    query: object
    labels: str
    layer: str | None
    expression: str
    name: str


# -- inputs -----------------------------------------------------------------------------------
def example_split():
    """The embedded example: :func:`scattn.datasets.pbmc68k_reference_query` (scanpy's
    ``pbmc68k_reduced``, log-normalised, split within each ``bulk_labels`` type into cells at
    even positions, the reference, and odd ones, the query)."""
    from scattn.datasets import pbmc68k_reference_query

    reference, query = pbmc68k_reference_query()
    for adata in (reference, query):
        adata.obs = adata.obs[["bulk_labels"]].copy()
        adata.obsm.clear()
        adata.uns.clear()
    return reference, query


def _read(path: str, what: str):
    import anndata as ad

    p = Path(path)
    if not p.exists():
        raise AnnotateError(f"The {what} file {path!r} does not exist.")
    if p.is_dir():
        raise AnnotateError(f"The {what} {path!r} is a directory; give an .h5ad file.")
    try:
        return ad.read_h5ad(p)
    except Exception as err:
        raise AnnotateError(f"Cannot read the {what} {path!r} as an h5ad file ({type(err).__name__}: "
                            f"{err}).") from None


def _matrix(adata, layer: str | None, what: str):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        have = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise AnnotateError(f"The {what} has no layer {layer!r} (layers: {have}).")
    return adata.layers[layer]


def detect_expression(matrix, what: str) -> str:
    """``"counts"`` (non-negative integers) or ``"log1p"`` (non-negative, not integers, at most
    ~20: log-normalised), from up to 2,000 cells; anything else is an error."""
    from scipy import sparse

    rows = matrix[: min(2000, matrix.shape[0])]
    values = rows.data if sparse.issparse(rows) else np.asarray(rows).ravel()
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise AnnotateError(f"The {what} has no non-zero values in its first cells.")
    if not np.isfinite(values).all():
        raise AnnotateError(f"The {what} holds NaN or infinite values.")
    if values.min() < 0:
        raise AnnotateError(f"The {what} has negative values (scaled or centred data?); give raw counts "
                            "or log-normalised values (e.g. a 'counts' layer, or adata.raw).")
    if np.allclose(values, np.round(values)):
        return "counts"
    if values.max() <= 30:
        return "log1p"
    raise AnnotateError(f"The {what} is neither counts (it has non-integers) nor log-normalised "
                        f"(values up to {values.max():.0f}); give raw counts or log1p values.")


def check_inputs(reference, query, *, labels: str, layer: str | None, name: str) -> Inputs:
    """Every check before anything is trained or written."""
    if labels not in reference.obs:
        cols = ", ".join(map(repr, reference.obs.columns[:12])) or "none"
        raise AnnotateError(f"The reference has no obs column {labels!r} (columns: {cols}); pass "
                            "--labels with the column of cell types.")
    if reference.obs[labels].isna().all():
        raise AnnotateError(f"The reference's {labels!r} column has no labels.")
    ref_kind = detect_expression(_matrix(reference, layer, "reference"), "reference")
    query_kind = detect_expression(_matrix(query, layer, "query"), "query")
    if ref_kind != query_kind:
        raise AnnotateError(
            f"The reference holds {ref_kind} and the query {query_kind} (in "
            f"{'X' if layer is None else 'layer ' + repr(layer)}); give both the same kind, e.g. raw "
            "counts in a layer of each file (--layer)."
        )
    shared = reference.var_names.intersection(query.var_names)
    if len(shared) == 0:
        raise AnnotateError(
            f"The reference and the query share no gene name (reference: {', '.join(reference.var_names[:3])}"
            f"...; query: {', '.join(query.var_names[:3])}...). Name genes the same way in both "
            "(symbols or Ensembl IDs)."
        )
    if len(shared) < 0.5 * reference.n_vars:
        logger.warning("The query has %d of the reference's %d genes; the others read as zero.",
                       len(shared), reference.n_vars)
    return Inputs(reference, query, labels, layer, ref_kind, name)


# -- the run ----------------------------------------------------------------------------------
def annotate(inputs: Inputs, *, model_name: str = DEFAULT_MODEL, load: str | None = None,
             max_epochs: int | None = None, p_unknown: float = 0.01, seed: int = 0,
             out: str | os.PathLike = "scattn_annotate", overwrite: bool = False,
             save_model: bool = False, adapt: bool = True) -> dict:
    """Train (or load) `model_name` on the reference, annotate the query and write the results
    into `out` (see the module's docstring). Returns a summary (cells, genes, share Unknown,
    macro F1 when the query has labels)."""
    import scattn as sa

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise AnnotateError(f"{str(out)!r} exists and is not empty; pass --overwrite or another --out.")
    if model_name not in MODELS:
        raise AnnotateError(f"--model must be one of {', '.join(MODELS)}, got {model_name!r}.")
    cls = getattr(sa.model, model_name)
    key = model_name.lower()
    sa.settings.seed = seed
    reference = inputs.reference.copy()
    query = inputs.query.copy()
    labels = reference.obs[inputs.labels].astype("string")
    renamed = labels.str.contains("/", regex=False).fillna(False).any()
    reference.obs[inputs.labels] = labels.str.replace("/", "|", regex=False).astype("category")
    if load is not None:
        try:  # with the reference it was trained on (the same genes), else the AnnData saved with it
            same = Path(load, "model.pt").exists() and not Path(load, "adata.h5ad").exists()
            model = cls.load(load, adata=reference) if same else cls.load(load)
        except Exception as err:
            raise AnnotateError(f"Cannot load a {model_name} from {load!r} ({type(err).__name__}: {err}).") from None
    else:
        cls.setup_anndata(reference, labels_key=inputs.labels, layer=inputs.layer,
                          expression=inputs.expression)
        model = cls(reference)
        model.train(max_epochs=max_epochs)
    threshold = None
    held_out = getattr(model, "validation_indices", None)
    if load is None and held_out is not None and len(held_out) >= 20:
        held = model.predict(reference[np.sort(held_out)].copy(), inplace=False)
        threshold = float(np.quantile(held.confidence, p_unknown))
    else:
        logger.warning("No held-out reference cells to calibrate 'Unknown' on; every query cell gets "
                       "its most likely type.")
    predictor = model
    if adapt:  # the query's labels (if any) are for scoring only: the query model never sees them
        unlabelled = query.copy()
        unlabelled.obs = unlabelled.obs[[]]
        predictor = cls.load_query_data(unlabelled, model)
        predictor.train(max_epochs=max_epochs)
    predictor.predict(query, key_added=key, unknown_threshold=threshold)
    summary = {"model": model_name, "adapted": adapt, "reference_cells": int(reference.n_obs), "query_cells": int(query.n_obs),
               "shared_genes": int(len(reference.var_names.intersection(query.var_names))),
               "unknown_threshold": threshold,
               "share_unknown": float((query.obs[f"{key}_prediction"] == "Unknown").mean())}
    truth_key = inputs.labels if inputs.labels in query.obs and query.obs[inputs.labels].notna().any() else None
    if truth_key is not None:
        query.obs[inputs.labels] = query.obs[inputs.labels].astype("string").str.replace("/", "|", regex=False)
        scores = sa.tl.evaluate(query, inputs.labels, f"{key}_prediction", key_added=f"{key}_evaluation")
        summary["macro_f1"] = float(scores["macro_f1"])
        summary["accuracy"] = float(scores["accuracy"])
    import scanpy as sc

    sc.pp.neighbors(query, use_rep=f"X_{key}", random_state=seed)
    sc.tl.umap(query, random_state=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-", dir=out.parent))
    try:
        (tmp / "figures").mkdir()
        query.write_h5ad(tmp / "annotated.h5ad")
        sc.get.rank_genes_groups_df(query, group=None, key=f"{key}_markers").to_csv(tmp / "markers.csv", index=False)
        figures = _figures(query, key, truth_key, tmp / "figures")
        _report(tmp / "report.md", summary, figures, inputs, renamed)
        if save_model:
            model.save(tmp / "model")
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; what a failure left
    return summary


def _figures(query, key: str, truth_key: str | None, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    import scattn as sa

    names = []
    predicted = query.obs[f"{key}_prediction"].astype("category")
    colours = sc.pl.palettes.default_20 if len(predicted.cat.categories) <= 20 else sc.pl.palettes.default_102
    palette = {c: ("#c8c8c8" if c == "Unknown" else colours[i % len(colours)])
               for i, c in enumerate(predicted.cat.categories)}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    sc.pl.umap(query, color=f"{key}_prediction", ax=axes[0], show=False, title="predicted type (grey: Unknown)",
               palette=palette)
    sc.pl.umap(query, color=f"{key}_confidence", ax=axes[1], show=False, title="confidence", cmap="viridis")
    fig.tight_layout()
    fig.savefig(folder / "umap.png", dpi=120)
    plt.close(fig)
    names.append("umap.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.dendrogram(query, groupby=f"{key}_prediction")  # computed here, not announced by the plot
    fig = sa.pl.marker_dotplot(query, key=f"{key}_markers", n_genes=3, show=False, return_fig=True)
    fig.savefig(folder / "markers_dotplot.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    names.append("markers_dotplot.png")
    counts = query.obs[f"{key}_prediction"].value_counts()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(counts) + 1.2))
    colors = ["#b0b0b0" if c == "Unknown" else "#3a6ea5" for c in counts.index]
    ax.barh(counts.index.astype(str)[::-1], (counts.to_numpy() / counts.sum())[::-1], color=colors[::-1])
    ax.set_xlabel("share of query cells")
    ax.set_title("predicted types (grey: Unknown)")
    fig.tight_layout()
    fig.savefig(folder / "predicted_share.png", dpi=120)
    plt.close(fig)
    names.append("predicted_share.png")
    if truth_key is not None:
        fig = sa.pl.confusion_matrix(query, key=f"{key}_evaluation", show=False, return_fig=True)
        fig.savefig(folder / "confusion_matrix.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        names.append("confusion_matrix.png")
    return names


def _report(path: Path, summary: dict, figures: list[str], inputs: Inputs, renamed: bool) -> None:
    lines = [f"# scattn annotate: {inputs.name}", "",
             f"- model: {summary['model']} (trained on the reference's {summary['reference_cells']} cells, "
             f"labels {inputs.labels!r}, {inputs.expression})"
             + ("; adapted to the query (reference cells + its confident calls on the query)"
                if summary.get("adapted") else ""),
             f"- query: {summary['query_cells']} cells, {summary['shared_genes']} genes shared with the reference",
             f"- Unknown: {summary['share_unknown']:.1%} of the query (confidence below "
             + ("-" if summary["unknown_threshold"] is None else f"{summary['unknown_threshold']:.3f}") + ")"]
    if "macro_f1" in summary:
        lines.append(f"- against the query's own labels: macro F1 {summary['macro_f1']:.3f}, accuracy "
                     f"{summary['accuracy']:.3f}")
    if renamed:
        lines.append("- labels containing '/' are written with '|' (h5ad keys cannot hold '/')")
    lines += ["", "Files: `annotated.h5ad`, `markers.csv`, `figures/`.", ""]
    lines += [f"![{name}](figures/{name})" for name in figures]
    path.write_text("\n".join(lines) + "\n")


# -- command line -----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scattn", description="scattn's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("annotate", help="label a new study (QUERY) from a labelled reference",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", nargs="?", help="labelled reference .h5ad (none: the embedded example)")
    p.add_argument("query", nargs="?", help="query .h5ad to annotate")
    p.add_argument("--labels", help="obs column of the reference's cell types (the example: bulk_labels)")
    p.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS, help=f"default {DEFAULT_MODEL}")
    p.add_argument("--layer", default=None, help="layer with the expression in both files (default: X)")
    p.add_argument("--out", default="scattn_annotate", help="output folder (default ./scattn_annotate)")
    p.add_argument("--load", default=None, help="a model saved with model.save(dir) instead of training")
    p.add_argument("--save-model", action="store_true", help="also save the trained model into OUT/model")
    p.add_argument("--max-epochs", type=int, default=None, help="training epochs at most (default: the model's)")
    p.add_argument("--p-unknown", type=float, default=0.01,
                   help="share of held-out reference cells below the Unknown threshold (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-adapt", dest="adapt", action="store_false",
                   help="predict with the reference model as it is (no adaptation to the query)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    return parser


def main(argv=None) -> int:
    """The ``scattn`` console script; returns the exit status."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    import scattn as sa

    if args.quiet:
        sa.settings.progress_bar = False
        sa.settings.verbosity = "ERROR"
    try:
        if (args.reference is None) != (args.query is None):
            raise AnnotateError("Give both REFERENCE and QUERY, or neither (the embedded example).")
        if args.reference is None:
            reference, query = example_split()
            labels, name = args.labels or "bulk_labels", f"{EXAMPLE} (even/odd cells of each type)"
        else:
            if args.labels is None:
                raise AnnotateError("Pass --labels, the reference's obs column of cell types.")
            reference, query = _read(args.reference, "reference"), _read(args.query, "query")
            labels, name = args.labels, f"{Path(args.reference).name} -> {Path(args.query).name}"
        if not 0 < args.p_unknown < 1:
            raise AnnotateError(f"--p-unknown must be in (0, 1), got {args.p_unknown}.")
        inputs = check_inputs(reference, query, labels=labels, layer=args.layer, name=name)
        summary = annotate(inputs, model_name=args.model, load=args.load, max_epochs=args.max_epochs,
                           p_unknown=args.p_unknown, seed=args.seed, out=args.out,
                           overwrite=args.overwrite, save_model=args.save_model, adapt=args.adapt)
    except AnnotateError as err:
        print(f"scattn annotate: error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        extra = f", macro F1 {summary['macro_f1']:.3f} against the query's labels" if "macro_f1" in summary else ""
        print(f"Annotated {summary['query_cells']} cells with {summary['model']} ({summary['share_unknown']:.1%} "
              f"Unknown{extra}); results in {args.out}/ (report.md, annotated.h5ad, markers.csv, figures/).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
