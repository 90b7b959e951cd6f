import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import sparse

import scattn.data._validate as validate_module
from scattn.data import (
    check_expression,
    check_input,
    check_labels,
    check_nonempty_cells,
    check_var_names,
    get_matrix,
    is_backed,
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


# -- backed matrices: read in blocks of rows, the same errors as in memory --------------------
def _error(fn, *args) -> str | None:
    try:
        fn(*args)
    except ValueError as err:
        return str(err)
    return None


def _backed(tmp_path, x, name="x.h5ad") -> ad.AnnData:
    ad.AnnData(X=x, obs=pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])])).write_h5ad(tmp_path / name)
    return ad.read_h5ad(tmp_path / name, backed="r")


@pytest.mark.parametrize("bad, match", [
    (-1.0, "negative"), (np.nan, "2 NaN or infinite"), (np.inf, "2 NaN or infinite"), (1.5, "non-integer"),
])
@pytest.mark.parametrize("to_sparse", [False, True])
def test_backed_bad_values_same_error(tmp_path, monkeypatch, bad, match, to_sparse):
    monkeypatch.setattr(validate_module, "CHUNK_SIZE", 2)  # 4 blocks of rows
    x = np.arange(24, dtype=np.float32).reshape(8, 3) + 1
    x[3, 1] = x[7, 2] = bad  # in two blocks, none the first
    x = sparse.csr_matrix(x) if to_sparse else x
    backed = _backed(tmp_path, x)
    assert is_backed(backed.X)
    expected = _error(check_expression, x, "counts")
    assert match in expected
    assert _error(check_expression, backed.X, "counts") == expected
    assert _error(check_input, backed, None, "counts") == expected


def test_backed_errors_in_the_in_memory_order(tmp_path, monkeypatch):
    monkeypatch.setattr(validate_module, "CHUNK_SIZE", 2)
    x = np.ones((6, 2), dtype=np.float32)
    x[0, 0], x[2, 0], x[5, 1] = 1.5, -3, np.nan  # non-integer, then negative, then NaN
    for y in (x, x[:5]):  # NaN first; without it, the negative
        expected = _error(check_expression, y, "counts")
        assert _error(check_expression, _backed(tmp_path, y, f"{len(y)}.h5ad").X, "counts") == expected
    assert "NaN" in _error(check_expression, x, "counts")
    assert "min -3" in _error(check_expression, x[:5], "counts")


@pytest.mark.parametrize("to_sparse", [False, True])
def test_backed_empty_cells_same_error(tmp_path, monkeypatch, to_sparse):
    monkeypatch.setattr(validate_module, "CHUNK_SIZE", 2)
    x = np.ones((7, 3), dtype=np.float32)
    x[[2, 5, 6]] = 0
    x = sparse.csr_matrix(x) if to_sparse else x
    backed = _backed(tmp_path, x)
    expected = _error(check_nonempty_cells, x, backed.obs_names)
    assert "3 cells with no expression (c2, c5, c6" in expected
    assert _error(check_input, backed, None, "counts") == expected


def test_backed_good_data_passes(tmp_path, monkeypatch, adata):
    monkeypatch.setattr(validate_module, "CHUNK_SIZE", 16)
    backed = _backed(tmp_path, adata.X)
    assert is_backed(check_input(backed, None, "counts"))
    check_expression(backed.X, "log1p")


# -- property tests: classes of matrices rather than listed cases -----------------------------------

_counts = arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 8)),
                 elements=st.integers(0, 50).map(float))


def _nonempty(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[x.sum(1) == 0, 0] = 1
    return x


@settings(max_examples=40, deadline=None)
@given(_counts, st.booleans())
def test_valid_counts_pass(x, as_sparse):
    x = _nonempty(x)
    check_expression(sparse.csr_matrix(x) if as_sparse else x, "counts")


@settings(max_examples=60, deadline=None)
@given(_counts, st.sampled_from(["nan", "inf", "negative", "fraction"]), st.data(), st.booleans())
def test_one_bad_value_is_always_named(x, kind, data, as_sparse):
    x = _nonempty(x)
    i = data.draw(st.integers(0, x.shape[0] - 1))
    j = data.draw(st.integers(0, x.shape[1] - 1))
    x[i, j] = {"nan": np.nan, "inf": np.inf, "negative": -1.0, "fraction": 0.5}[kind]
    expected = {"nan": "NaN or infinite", "inf": "NaN or infinite", "negative": "negative values",
                "fraction": "non-integer"}[kind]
    with pytest.raises(ValueError, match=expected):
        check_expression(sparse.csr_matrix(x) if as_sparse else x, "counts")


@settings(max_examples=40, deadline=None)
@given(_counts)
def test_integer_data_declared_log1p(x):
    x = _nonempty(x)
    if x.max() > 30:
        with pytest.raises(ValueError, match="look like raw counts"):
            check_expression(x, "log1p")
    else:
        check_expression(x, "log1p")  # small integers can be log-normalised values; accepted
    check_expression(np.log1p(x), "log1p")  # real log1p data always passes
