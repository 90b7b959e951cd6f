import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scattn.data import (
    check_expression,
    check_labels,
    check_nonempty_cells,
    check_var_names,
    get_matrix,
)


def test_counts_accepted_dense_and_sparse():
    x = np.array([[0, 1], [3, 0]], dtype=float)
    check_expression(x, "counts")
    check_expression(sparse.csr_matrix(x), "counts")


@pytest.mark.parametrize("bad, match", [
    (np.array([[0, -1.0]]), "negative"),
    (np.array([[0, np.nan]]), "NaN or infinite"),
    (np.array([[0, np.inf]]), "NaN or infinite"),
    (np.array([[0, 1.5]]), "non-integer"),
])
@pytest.mark.parametrize("to_sparse", [False, True])
def test_bad_counts(bad, match, to_sparse):
    with pytest.raises(ValueError, match=match):
        check_expression(sparse.csr_matrix(bad) if to_sparse else bad, "counts")


@pytest.mark.parametrize("bad", [np.array([[0, -1.0]]), np.array([[0, np.nan]])])
def test_bad_lognorm(bad):
    with pytest.raises(ValueError, match="negative|NaN"):
        check_expression(bad, "log1p")


def test_lognorm_accepts_non_integer_and_unknown_kind():
    check_expression(np.array([[0.5, 1.2]]), "log1p")
    with pytest.raises(ValueError, match="expression must be"):
        check_expression(np.array([[1.0]]), "tpm")


def test_duplicated_genes():
    with pytest.raises(ValueError, match="duplicated gene names.*var_names_make_unique"):
        check_var_names(pd.Index(["A", "B", "A"]))


def test_empty_cells():
    x = sparse.csr_matrix(np.array([[0, 0], [1, 0]]))
    with pytest.raises(ValueError, match="1 cells with no expression.*c0"):
        check_nonempty_cells(x, pd.Index(["c0", "c1"]))


def test_labels():
    classes, mask = check_labels(pd.Series(["a", "b", np.nan, "Unknown"]), "Unknown", labels_key="y")
    assert list(classes) == ["a", "b"] and mask.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="single labelled class"):
        check_labels(pd.Series(["a", "a", "Unknown"]), "Unknown", labels_key="y")
    with pytest.raises(ValueError, match="All cells .* are unlabelled"):
        check_labels(pd.Series([np.nan, "Unknown"]), "Unknown", labels_key="y")


def test_missing_layer(adata):
    with pytest.raises(KeyError, match="Layer 'nope' not found.*counts"):
        get_matrix(adata, "nope")
