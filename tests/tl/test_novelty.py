"""sa.tl.novelty and sa.tl.unknown_threshold: the paper's ambiguous-fraction statistic."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import scattn as sa


def _predicted(conf, groups=None, *, record=True):
    """Cells with confidences as a CGRAN's predict writes them (and its record in uns)."""
    obs = pd.DataFrame({"cgran_confidence": conf}, index=[f"c{i}" for i in range(len(conf))])
    if groups is not None:
        obs["sample"] = pd.Categorical(groups)
    adata = ad.AnnData(obs=obs)
    if record:
        adata.uns["cgran"] = {"params": {"model": "CGRAN", "scattn_version": sa.__version__,
                                         "key_added": "cgran"}}
    return adata


def test_explicit_key_needs_no_model_record():
    """As before the key was found: a named key reads obs[f"{key}_confidence"] and nothing else."""
    conf = np.linspace(0.3, 1.0, 101)
    q = _predicted(conf, record=False)
    assert np.isclose(sa.tl.unknown_threshold(q, p_ref=0.1, key="cgran"), np.quantile(conf, 0.1))
    sa.tl.novelty(q, q, threshold=0.5, key="cgran")
    assert q.uns["novelty"]["params"]["key"] == "cgran"
    with pytest.raises(ValueError, match="No scattn model results.*`key=`"):
        sa.tl.novelty(q, q, threshold=0.5)


def test_threshold_is_the_reference_quantile():
    conf = np.linspace(0.3, 1.0, 101)
    t = sa.tl.unknown_threshold(_predicted(conf), p_ref=0.1)
    assert np.isclose(t, np.quantile(conf, 0.1))
    assert np.isclose(sa.tl.unknown_threshold(conf, p_ref=0.1), t)
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="p_ref"):
            sa.tl.unknown_threshold(conf, p_ref=bad)


def test_novelty_per_sample_fisher():
    rng = np.random.default_rng(0)
    ref = _predicted(rng.uniform(0.8, 1.0, 200))
    conf = np.r_[rng.uniform(0.8, 1.0, 100), rng.uniform(0.2, 0.6, 100)]
    q = _predicted(conf, groups=["known"] * 100 + ["new"] * 100)
    sa.tl.novelty(q, ref, threshold=0.7, groupby="sample")
    table = q.uns["novelty"]["table"]
    assert list(table.index) == ["known", "new"]
    assert table.loc["new", "p"] == 1.0 and table.loc["known", "p"] == 0.0
    assert table.loc["new", "novel"] and not table.loc["known", "novel"]
    expected = stats.fisher_exact([[100, 0], [0, 200]], alternative="greater")[1]
    assert np.isclose(table.loc["new", "pval"], expected)
    assert (q.obs["novelty_ambiguous"] == (conf < 0.7)).all()
    assert q.uns["novelty"]["params"]["test"] == "fisher"
    q.write_h5ad("/tmp/_novelty_roundtrip.h5ad")  # the table is h5ad-writable


def test_novelty_threshold_from_reference_and_binomial():
    rng = np.random.default_rng(1)
    ref_conf = rng.uniform(0.5, 1.0, 400)
    q = _predicted(rng.uniform(0.3, 0.9, 50))
    sa.tl.novelty(q, ref_conf, p_ref=0.05)
    params = q.uns["novelty"]["params"]
    assert np.isclose(params["threshold"], np.quantile(ref_conf, 0.05))
    assert np.isclose(q.uns["novelty"]["table"]["p_ref"].iloc[0], 0.05, atol=0.01)
    out = sa.tl.novelty(q, 0.05, threshold=0.6, copy=True)
    k = int((q.obs["cgran_confidence"] < 0.6).sum())
    assert np.isclose(out.uns["novelty"]["table"]["pval"].iloc[0],
                      stats.binomtest(k, 50, 0.05, alternative="greater").pvalue)
    assert "novelty_ambiguous" not in q.obs or q.uns["novelty"]["params"]["test"] == "fisher"


def test_novelty_bad_input():
    q = _predicted(np.array([0.5, 0.9]))
    ref = _predicted(np.array([0.9, 0.95]))
    for t in (0.0, 1.0, -1, 2):
        with pytest.raises(ValueError, match="threshold must be in \\(0, 1\\)"):
            sa.tl.novelty(q, ref, threshold=t)
    with pytest.raises(ValueError, match="adata has no cells"):
        sa.tl.novelty(q[:0].copy(), ref, threshold=0.5)
    with pytest.raises(ValueError, match="reference has no cells"):
        sa.tl.novelty(q, np.array([]), threshold=0.5)
    with pytest.raises(KeyError, match="predict it first"):
        sa.tl.novelty(q, ref, key="cfan", threshold=0.5)
    with pytest.raises(ValueError, match="Give `threshold`"):
        sa.tl.novelty(q, 0.05)
    with pytest.raises(KeyError, match="groupby"):
        sa.tl.novelty(q, ref, threshold=0.5, groupby="batch")


def test_novelty_after_predict(trained):
    model, adata = trained
    q = adata.copy()
    model.predict(q)
    sa.tl.novelty(q, q, p_ref=0.1, groupby="cell_type")
    table = q.uns["novelty"]["table"]
    assert set(table.index) == {"type0", "type1", "type2"} and table["n_cells"].sum() == q.n_obs


def test_novelty_scalar_and_2d_input():
    q = _predicted(np.array([0.3, 0.9, 0.4]))
    a = sa.tl.novelty(q, np.float32(0.05), threshold=0.5, copy=True)
    assert a.uns["novelty"]["params"]["test"] == "binomial"
    with pytest.raises(ValueError, match="1-D"):
        sa.tl.unknown_threshold(np.full((4, 3), 0.3))


def test_unread_cells_count_as_ambiguous_and_leave_the_reference(trained_cfan):
    model, adata = trained_cfan
    reference = adata.copy()
    model.predict(reference)
    query = reference.copy()
    query.obs["cfan_confidence"] = query.obs["cfan_confidence"].astype(float)
    query.obs.loc[query.obs_names[:30], "cfan_confidence"] = np.nan  # unread by the model
    reference.obs["cfan_confidence"] = query.obs["cfan_confidence"].to_numpy()
    t = sa.tl.unknown_threshold(reference, p_ref=0.1)  # NaN cells left out
    assert np.isfinite(t)
    sa.tl.novelty(query, reference, threshold=t)
    assert query.obs["novelty_ambiguous"].iloc[:30].all()
