"""Checks on user input that turn bad data into a clear error before it reaches torch."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from scattn._quiet import user_stacklevel

Expression = Literal["counts", "log1p"]
EXPRESSION_KINDS = ("counts", "log1p")

#: rows read at once from a backed matrix (fewer for wide dense ones, see `iter_row_blocks`)
CHUNK_SIZE = 10_000
# at most this many values of a dense backed matrix in memory at once
_MAX_DENSE_VALUES = 50_000_000


def is_backed(matrix) -> bool:
    """Whether `matrix` lives on disk: a backed AnnData's X (anndata's sparse datasets, h5py)."""
    from anndata.abc import CSCDataset, CSRDataset

    if isinstance(matrix, CSRDataset | CSCDataset):
        return True
    import h5py

    if isinstance(matrix, h5py.Dataset):
        return True
    zarr = sys.modules.get("zarr")  # a zarr array can only exist if zarr was imported
    return zarr is not None and isinstance(matrix, zarr.Array)


def iter_row_blocks(matrix, chunk_size: int | None = None, *,
                    desc: str | None = None) -> Iterator[tuple[int, int, object]]:
    """``(start, stop, block)`` over the rows of `matrix`, each block in memory.

    A backed matrix (:func:`is_backed`) is read `chunk_size` rows at a time (default
    :data:`CHUNK_SIZE`, fewer for wide dense data), so it never loads whole, with a progress
    bar (`desc`, default ``"Reading cells from disk"``) where there is more than one block
    (:attr:`scattn.settings.progress_bar` turns it off); an in-memory matrix is a single
    block, itself.
    """
    from scattn._progress import progress

    n_rows = matrix.shape[0]
    if not is_backed(matrix):
        yield 0, n_rows, matrix
        return
    step = CHUNK_SIZE if chunk_size is None else int(chunk_size)
    if chunk_size is None and not hasattr(matrix, "format"):  # dense: bound the values read
        step = min(step, max(1, _MAX_DENSE_VALUES // max(1, matrix.shape[1])))
    with progress(total=n_rows, desc=desc or "Reading cells from disk", show=n_rows > step) as bar:
        for start in range(0, n_rows, step):
            stop = min(start + step, n_rows)
            yield start, stop, matrix[start:stop]
            bar.update(stop - start)


def read_rows(matrix, rows: np.ndarray):
    """Rows `rows` (positions, any order) of a matrix in memory, on disk or lazy, in memory.

    Consecutive positions are read as one slice (the fast path for a backed matrix); other
    positions of a backed matrix are read in increasing order (what h5py needs) and put back
    in the order asked.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
        block = matrix[int(rows[0]):int(rows[-1]) + 1]
    elif is_backed(matrix):
        order = np.argsort(rows, kind="stable")
        unique, inverse = np.unique(rows[order], return_inverse=True)
        block = matrix[unique]
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        block = block[inverse[back]]
    else:
        block = matrix[rows]
    if hasattr(block, "compute"):  # a lazy (dask) array
        block = block.compute()
    return block


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``, with a clear error if the layer is missing."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty; pass `layer=` naming the layer that holds the data.")
        return adata.X
    if layer not in adata.layers:
        available = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise KeyError(f"Layer {layer!r} not found in adata.layers (available: {available}).")
    return adata.layers[layer]


def _values(matrix) -> np.ndarray:
    """The stored values of a dense or sparse matrix (without copying where possible)."""
    if sparse.issparse(matrix):
        return matrix.data
    return np.asarray(matrix)


def check_expression(matrix, expression: Expression, *, where: str = "adata.X") -> None:
    """Raise if `matrix` cannot be the declared kind of expression data.

    Parameters
    ----------
    matrix
        Dense or sparse cells x genes matrix, or a backed one (read a block of rows at a
        time; the errors are those of the whole matrix).
    expression
        ``"counts"`` (non-negative integers) or ``"log1p"`` (non-negative, finite).
    where
        Name of the matrix in messages.
    """
    if expression not in EXPRESSION_KINDS:
        raise ValueError(f"expression must be one of {EXPRESSION_KINDS}, got {expression!r}.")
    if not hasattr(matrix, "shape") or len(matrix.shape) != 2:
        raise TypeError(f"{where} must be a 2-d array or sparse matrix.")
    if is_backed(matrix):  # every value is read, a block of rows at a time
        if not np.issubdtype(matrix.dtype, np.number):
            raise TypeError(f"{where} has non-numeric dtype {matrix.dtype}.")
        n_bad, minimum, integral, maximum = 0, np.inf, True, -np.inf
        for _, _, block in iter_row_blocks(matrix, desc=f"Checking {where}"):
            b_bad, b_min, b_integral, b_max = _value_summary(_values(block), expression, skip=n_bad > 0)
            n_bad, minimum, integral = n_bad + b_bad, min(minimum, b_min), integral and b_integral
            maximum = max(maximum, b_max)
        _raise_on_values(n_bad, minimum, integral, expression, where, maximum)
        return
    values = _values(matrix)
    if not np.issubdtype(values.dtype, np.number):
        raise TypeError(f"{where} has non-numeric dtype {values.dtype}.")
    n_bad, minimum, integral, maximum = _value_summary(values, expression)
    _raise_on_values(n_bad, minimum, integral, expression, where, maximum)


#: log-normalised values above this that are all integers are taken for raw counts
LOG1P_COUNTS_MAX = 30


def _value_summary(values: np.ndarray, expression: Expression, *, skip: bool = False):
    """``(number of NaN/inf, minimum, all integral, maximum)`` of stored values, as needed.

    The minimum is only looked at without NaN, integrality only without negatives (the order
    in which :func:`_raise_on_values` reports); `skip` (a NaN was already found elsewhere)
    computes only the NaN count.
    """
    if values.size == 0:
        return 0, np.inf, True, -np.inf
    n_bad = 0 if np.all(np.isfinite(values)) else int(np.size(values) - np.isfinite(values).sum())
    if n_bad or skip:
        return n_bad, np.inf, True, -np.inf
    minimum, maximum = values.min(), values.max()
    integral = bool(minimum < 0 or np.all(np.equal(np.mod(values, 1), 0)))
    return n_bad, minimum, integral, maximum


def _raise_on_values(n_bad: int, minimum, integral: bool, expression: Expression, where: str,
                     maximum=-np.inf) -> None:
    """The value errors of :func:`check_expression`, in the order it reports them."""
    if n_bad:
        raise ValueError(f"{where} contains {n_bad} NaN or infinite values; remove or fix them.")
    if minimum < 0:
        raise ValueError(
            f"{where} contains negative values (min {minimum:.3g}). scattn models need raw "
            "counts or log-normalised data, not scaled data: pass the counts layer "
            "(`layer='counts'`) or `adata.raw.to_adata()`."
        )
    if expression == "counts" and not integral:
        raise ValueError(
            f"{where} is declared as counts but holds non-integer values. Pass the layer with raw "
            "counts, or declare log-normalised data with `expression='log1p'`."
        )
    if expression == "log1p" and integral and maximum > LOG1P_COUNTS_MAX:
        raise ValueError(
            f"{where} is declared log-normalised (`expression='log1p'`) but holds only integers, up "
            f"to {maximum:.0f}: these look like raw counts. Declare them with "
            "`expression='counts'` (the model normalises them), or pass log-normalised values."
        )


def check_var_names(var_names: pd.Index, *, where: str = "adata",
                    fix: str = "make them unique first, e.g. `adata.var_names_make_unique()`") -> None:
    """Raise on duplicated gene names (the message names up to five and says `fix`)."""
    if not var_names.is_unique:
        dup = var_names[var_names.duplicated()].unique()
        shown = ", ".join(map(str, dup[:5])) + (", ..." if len(dup) > 5 else "")
        raise ValueError(
            f"{where} has {len(dup)} duplicated gene names ({shown}); genes are matched by "
            f"name, so {fix}."
        )


def check_nonempty_cells(matrix, obs_names: pd.Index, *, where: str = "adata") -> None:
    """Raise if any cell has no expression at all (a backed matrix is read in row blocks)."""
    empty = np.concatenate([
        start + np.flatnonzero(np.asarray(block.sum(axis=1)).ravel() <= 0)
        for start, _, block in iter_row_blocks(matrix, desc="Looking for empty cells")
    ] or [np.zeros(0, dtype=int)])
    if len(empty):
        shown = ", ".join(map(str, obs_names[empty[:3]]))
        raise ValueError(
            f"{where} has {len(empty)} cells with no expression ({shown}, ...); remove them, e.g. "
            "`sc.pp.filter_cells(adata, min_counts=1)`."
        )


def check_not_empty(adata: AnnData) -> None:
    """Raise if `adata` has no cell or no gene."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"adata has {adata.n_obs} cells and {adata.n_vars} genes; a model needs "
                         "at least one of each (check the subsetting that made it).")


def labelled_mask(labels: pd.Series, unlabeled_category: str) -> np.ndarray:
    """Cells with a label: neither NaN nor `unlabeled_category`."""
    return labels.notna().to_numpy() & (labels.astype(object) != unlabeled_category).to_numpy()


def balanced_class_weights(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """One weight per class, ``n / (C n_c)`` over the labelled codes (codes below
    `n_classes`; ``C`` the classes that have cells), so that every class weighs as much in the
    loss as a class of average size; classes without cells get 1."""
    codes = np.asarray(codes).ravel()
    counts = np.bincount(codes[codes < n_classes].astype(int), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def check_input(adata: AnnData, layer: str | None, expression: Expression):
    """The checks every model makes on data it reads; return the matrix.

    Unique gene names, the layer exists, values fit `expression`, no empty cell. A backed
    matrix (e.g. from :func:`scattn.data.read_h5ads`) is read in blocks of rows: every value
    is checked and the errors are the same, but it never loads whole.
    """
    check_not_empty(adata)
    check_var_names(adata.var_names)
    matrix = get_matrix(adata, layer)
    where = f"adata.layers[{layer!r}]" if layer else "adata.X"
    check_expression(matrix, expression, where=where)
    check_nonempty_cells(matrix, adata.obs_names)
    return matrix


def label_strings(labels: pd.Series) -> pd.Series:
    """Labels as strings, integral numbers without a decimal point (``1.0`` -> ``"1"``).

    Integer labels become floats in pandas as soon as one is NaN; without this, ``"1"`` of one
    dataset and ``"1.0"`` of another would be different classes.
    """

    def one(v):
        if isinstance(v, float | np.floating) and np.isfinite(v) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return labels.astype(object).map(one)


def check_labels(
    labels: pd.Series, unlabeled_category: str, *, labels_key: str, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check a labels column; return the known classes and a boolean mask of labelled cells.

    Cells whose label is `unlabeled_category` or NaN are unlabelled. With `classes` (a fixed
    label set, e.g. a reference model's), every label must be one of them, and a single
    labelled class, or none (a query to adapt to), is enough.
    """
    if unlabeled_category is None or (isinstance(unlabeled_category, float) and np.isnan(unlabeled_category)):
        raise ValueError(
            "unlabeled_category must be a label value such as 'Unknown' (NaN labels always count "
            "as unlabelled); got None."
        )
    labelled = labelled_mask(labels, unlabeled_category)
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes) or unlabeled_category in classes:
            raise ValueError(
                f"classes must be unique and must not contain the unlabelled category "
                f"{unlabeled_category!r}."
            )
    if not labelled.any() and classes is None:  # with a fixed label set (a query): allowed
        raise ValueError(
            f"All cells in adata.obs[{labels_key!r}] are unlabelled (NaN or "
            f"{unlabeled_category!r}); labelled cells are needed to train."
        )
    found = pd.unique(label_strings(labels[labelled]))
    if classes is not None:
        extra = sorted(set(found) - {str(c) for c in classes})
        if extra:
            raise ValueError(
                f"adata.obs[{labels_key!r}] has labels outside the model's classes: "
                f"{', '.join(map(repr, extra[:10]))}{', ...' if len(extra) > 10 else ''}. Set them to "
                f"{unlabeled_category!r} (they are then predicted, and `sa.tl.novelty` can flag them), "
                "or add them to the classes (`extend_classes=True` when loading query data)."
            )
        return np.asarray(classes), labelled
    classes = found
    if len(classes) < 2:
        raise ValueError(
            f"adata.obs[{labels_key!r}] has a single labelled class ({classes[0]!r}); a "
            "classifier needs at least two."
        )
    slashed = [str(c) for c in classes if "/" in str(c)]
    if slashed:
        warnings.warn(
            f"{len(slashed)} classes of adata.obs[{labels_key!r}] contain '/' (e.g. {slashed[0]!r}). "
            "Results name columns by class (obsm['<key>_probabilities'], the markers' 'pts' "
            "tables), and anndata will refuse '/' in h5 keys from its next minor release; to keep "
            "results writable, rename them first, e.g. `adata.obs[key] = "
            "adata.obs[key].astype(str).str.replace('/', '|')`.", UserWarning, stacklevel=user_stacklevel(),
        )
    n_labelled = int(labelled.sum())
    if n_labelled >= 20 and len(classes) > n_labelled / 2:
        warnings.warn(
            f"adata.obs[{labels_key!r}] has {len(classes)} classes for {n_labelled} labelled cells "
            "(most cells are a class of their own): is it a continuous or ID column rather than "
            "cell types?", UserWarning, stacklevel=user_stacklevel(),
        )
    return np.sort(classes), labelled
