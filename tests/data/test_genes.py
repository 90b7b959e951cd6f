import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scattn.data import align_to_genes, log_normalize, select_variable_genes


def test_align_shuffled_and_missing():
    x = sparse.csr_matrix(np.arange(12, dtype=float).reshape(3, 4))
    src = pd.Index(["a", "b", "c", "d"])
    target = pd.Index(["d", "b", "z", "a"])
    with pytest.warns(UserWarning, match="1 of the model's 4 genes are missing"):
        out, present = align_to_genes(x, src, target)
    np.testing.assert_array_equal(out.toarray(), x.toarray()[:, [3, 1, 0, 0]] * np.array([1, 1, 0, 1]))
    assert present.tolist() == [True, True, False, True]


def test_align_errors():
    x = np.ones((2, 2))
    with pytest.raises(ValueError, match="shares no gene"):
        align_to_genes(x, pd.Index(["a", "b"]), pd.Index(["c", "d"]))
    with pytest.raises(ValueError, match="Only 1 of the model's 4 genes"):
        align_to_genes(x, pd.Index(["a", "b"]), pd.Index(["a", "x", "y", "z"]))


def test_variable_genes(adata):
    idx = select_variable_genes(log_normalize(adata.X, "counts"), 20)
    assert len(idx) == 20 and np.all(np.diff(idx) > 0)
    # seurat flavour z-scores dispersion within mean bins: each type's planted markers share a
    # bin, so at least one marker of every type is among the most variable genes
    chosen = set(adata.var_names[idx])
    assert all(any(f"MK{k}_{i}" in chosen for i in range(5)) for k in range(3))
