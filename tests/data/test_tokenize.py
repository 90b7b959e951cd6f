"""Gene vocabulary and rank-value encoding (the token models' shared input)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scattn.data import GeneVocabulary, gene_nonzero_medians, rank_value_encode


def test_vocabulary_ids_and_roundtrip():
    vocab = GeneVocabulary(["A", "B", "C"])
    assert len(vocab) == 6 and (vocab.pad_id, vocab.mask_id, vocab.cls_id) == (0, 1, 2)
    np.testing.assert_array_equal(vocab.ids(["C", "X", "A", "<pad>"]), [5, -1, 3, -1])
    assert GeneVocabulary.from_dict(vocab.to_dict()) == vocab
    td = {"<pad>": 0, "<mask>": 1, "G1": 2, "G2": 3}
    v2 = GeneVocabulary.from_token_dictionary(td)
    assert v2.special_tokens == ("<pad>", "<mask>") and v2.ids(["G2"])[0] == 3
    with pytest.raises(ValueError, match="unique"):
        GeneVocabulary(["A", "A"])
    with pytest.raises(ValueError, match="0..n-1"):
        GeneVocabulary.from_token_dictionary({"<pad>": 0, "G": 5})


def test_vocabulary_match_warns_and_explains():
    vocab = GeneVocabulary([f"ENSG{i:011d}" for i in range(50)])
    with pytest.warns(UserWarning, match="2 of the 12 genes"):
        ids, kept = vocab.match([f"ENSG{i:011d}" for i in range(10)] + ["X", "Y"])
    assert kept.sum() == 10 and (ids[~kept] == -1).all()
    with pytest.raises(ValueError, match="Ensembl IDs and adata gene symbols"):
        vocab.match(["CD3D", "CD3E", "MS4A1"])


def test_vocabulary_from_anndata_column():
    a = ad.AnnData(np.zeros((2, 3)), var=pd.DataFrame({"ens": ["E1", "E2", "E3"]}, index=["a", "b", "c"]))
    assert list(GeneVocabulary.from_anndata(a, gene_id_key="ens").genes) == ["E1", "E2", "E3"]
    with pytest.raises(KeyError, match="not a column"):
        GeneVocabulary.from_anndata(a, gene_id_key="nope")


def test_medians_match_exact_and_stream():
    rng = np.random.default_rng(0)
    x = sparse.random(300, 20, density=0.3, random_state=0, data_rvs=lambda n: rng.integers(1, 50, n)).tocsr()
    x = x.astype(np.float32)
    med = gene_nonzero_medians(x)
    norm = x.multiply(1e4 / np.asarray(x.sum(1))).tocsc()
    for j in range(20):
        col = norm[:, j].data
        if len(col):
            assert med[j] == pytest.approx(np.median(col), rel=0.02)
    # streamed block by block (a backed matrix reads the same way)
    from scattn.data import _validate

    class Backed:  # stands for anndata's backed dataset: sliced by rows
        shape = x.shape

        def __getitem__(self, s):
            return x[s]

    orig = _validate.is_backed
    _validate.is_backed = lambda m: isinstance(m, Backed) or orig(m)
    try:
        np.testing.assert_allclose(gene_nonzero_medians(Backed(), chunk_size=37), med)
        a = rank_value_encode(Backed(), np.arange(20) + 3, med, max_length=8, chunk_size=41)
    finally:
        _validate.is_backed = orig
    b = rank_value_encode(x, np.arange(20) + 3, med, max_length=8)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)


def test_rank_value_encoding():
    # cell 0: genes 0..3 with counts 1, 4, 0, 2; medians make gene 0 rank first
    x = sparse.csr_matrix(np.array([[1, 4, 0, 2], [0, 0, 0, 0], [5, 5, 5, 5]], dtype=np.float32))
    medians = np.array([0.1, 1.0, 1.0, 1.0])
    ids = np.array([10, 11, -1, 13])  # gene 2 outside the vocabulary
    tok = rank_value_encode(x, ids, medians, max_length=5, pad_id=0, cls_id=2)
    np.testing.assert_array_equal(tok.input_ids[0], [2, 10, 11, 13, 0])
    np.testing.assert_array_equal(tok.input_ids[1], [2, 0, 0, 0, 0])
    np.testing.assert_array_equal(tok.input_ids[2], [2, 10, 11, 13, 0])  # ties: by gene position
    np.testing.assert_array_equal(tok.lengths, [4, 1, 4])
    short = rank_value_encode(x, ids, medians, max_length=2)
    np.testing.assert_array_equal(short.input_ids, [[10, 11], [0, 0], [10, 11]])
    # log1p input gives the same ranks as its counts
    dense = x.toarray()
    totals = np.maximum(dense.sum(1, keepdims=True), 1)
    lx = sparse.csr_matrix(np.log1p(dense / totals * 1e4))
    np.testing.assert_array_equal(rank_value_encode(lx, ids, medians, expression="log1p").input_ids,
                                  rank_value_encode(x, ids, medians).input_ids)
    with pytest.raises(ValueError, match="positive"):
        rank_value_encode(x, ids, np.array([0.0, 1, 1, 1]))


def test_rank_value_encoding_with_eos_truncation_and_ties():
    # Geneformer V2: <cls>, at most max_length - 2 genes, <eos>
    x = sparse.csr_matrix(np.array([[3, 1, 2, 5, 4], [0, 0, 7, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    ids = np.array([20, 21, 22, 23, 24])
    tok = rank_value_encode(x, ids, np.ones(5), max_length=5, pad_id=0, cls_id=2, eos_id=3)
    np.testing.assert_array_equal(tok.input_ids, [[2, 23, 24, 20, 3], [2, 22, 3, 0, 0], [2, 3, 0, 0, 0]])
    np.testing.assert_array_equal(tok.lengths, [5, 3, 2])
    with pytest.raises(ValueError, match="max_length must be > 2"):
        rank_value_encode(x, ids, np.ones(5), max_length=2, cls_id=2, eos_id=3)
    # the kernel: <eos> and <cls> have no column
    import torch

    from scattn.nn import rank_tokens

    t_ids, t_len, cols = rank_tokens(torch.as_tensor(x.toarray()), torch.as_tensor(ids), max_length=5,
                                     cls_id=2, eos_id=3)
    np.testing.assert_array_equal(t_ids.numpy(), tok.input_ids)
    np.testing.assert_array_equal(cols.numpy(), [[-1, 3, 4, 0, -1], [-1, 2, -1, -1, -1], [-1, -1, -1, -1, -1]])
    # ties come in token-id order, whatever the order of the columns
    tied = sparse.csr_matrix(np.array([[2, 2, 2, 9]], dtype=np.float32))
    for order in ([0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]):
        enc = rank_value_encode(tied[:, order], np.array([30, 31, 32, 33])[order], np.ones(4), max_length=4)
        np.testing.assert_array_equal(enc.input_ids, [[33, 30, 31, 32]])
    # an infinite median leaves a gene out
    enc = rank_value_encode(tied, np.array([30, 31, 32, 33]), np.array([1, np.inf, 1, 1]), max_length=4)
    np.testing.assert_array_equal(enc.input_ids, [[33, 30, 32, 0]])
