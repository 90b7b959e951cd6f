"""sa.tl.evaluate: the SIMS thesis' Table 0.1 metrics, checked against scikit-learn and by hand."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

import scattn as sa

# 3 classes, 10 cells; hand counts per class (tp, fp, fn, tn):
#   A: tp 3, fp 1, fn 2, tn 4    B: tp 2, fp 2, fn 1, tn 5    C: tp 1, fp 1, fn 1, tn 7
TRUE = ["A", "A", "A", "A", "B", "B", "B", "C", "C", "A"]
PRED = ["A", "A", "A", "B", "B", "B", "A", "C", "B", "C"]
# with the A cell wrongly predicted "B" predicted "Unknown" instead
PRED_UNKNOWN = ["A", "A", "A", "Unknown", "B", "B", "A", "C", "B", "C"]


def _adata(truth, pred, **extra) -> ad.AnnData:
    obs = pd.DataFrame({"truth": truth, "pred": pred, **extra},
                       index=[f"c{i}" for i in range(len(truth))])
    return ad.AnnData(obs=obs)


def test_metrics_match_sklearn_and_hand():
    adata = _adata(TRUE, PRED)
    res = sa.tl.evaluate(adata, "truth", "pred")
    assert isinstance(res, pd.Series) and res.name == "evaluation"
    m = adata.uns["evaluation"]["metrics"]
    assert np.isclose(m["accuracy"], skm.accuracy_score(TRUE, PRED))
    assert np.isclose(m["balanced_accuracy"], skm.balanced_accuracy_score(TRUE, PRED))
    assert np.isclose(m["macro_f1"], skm.f1_score(TRUE, PRED, average="macro"))
    assert np.isclose(m["weighted_f1"], skm.f1_score(TRUE, PRED, average="weighted"))
    f1 = {"A": 2 * 3 / (2 * 3 + 1 + 2), "B": 2 * 2 / (2 * 2 + 2 + 1), "C": 2 / (2 + 1 + 1)}
    assert np.isclose(m["median_f1"], np.median(list(f1.values())))
    spec = (4 + 5 + 7) / ((4 + 1) + (5 + 2) + (7 + 1))
    assert np.isclose(m["micro_specificity"], spec)
    assert np.isclose(m["micro_precision"], 0.6) and np.isclose(m["micro_recall"], 0.6)
    assert m["fraction_unknown"] == 0.0
    assert m["n_cells"] == 10 and m["n_classes"] == 3
    assert all(type(v) is float for k, v in m.items() if not k.startswith("n_"))
    assert type(m["n_cells"]) is int and type(m["n_classes"]) is int
    assert np.isclose(res["accuracy"], m["accuracy"])

    per = adata.uns["evaluation"]["per_class"]
    assert list(per.index) == ["A", "B", "C"]
    assert list(per.columns) == ["precision", "recall", "specificity", "f1", "support",
                                 "n_predicted"]
    p, r, f, s = skm.precision_recall_fscore_support(TRUE, PRED, labels=["A", "B", "C"])
    assert np.allclose(per["precision"], p) and np.allclose(per["recall"], r)
    assert np.allclose(per["f1"], f) and (per["support"].to_numpy() == s).all()
    assert np.allclose(per["specificity"], [4 / 5, 5 / 7, 7 / 8])
    assert per["n_predicted"].tolist() == [4, 4, 2]

    cm = adata.uns["evaluation"]["confusion_matrix"]
    assert (cm.to_numpy() == skm.confusion_matrix(TRUE, PRED, labels=["A", "B", "C"])).all()
    assert adata.uns["evaluation"]["params"] == {
        "labels_key": "truth", "prediction_key": "pred", "unlabeled_category": "Unknown",
        "n_cells_unlabelled": 0,
    }


def test_unknown_predictions_are_wrong_and_reported():
    adata = _adata(TRUE, PRED_UNKNOWN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-division or "classes not in y_true" warnings
        sa.tl.evaluate(adata, "truth", "pred", key_added="ev")
    ev = adata.uns["ev"]
    m, per, cm = ev["metrics"], ev["per_class"], ev["confusion_matrix"]
    classes = ["A", "B", "C"]
    assert list(per.index) == classes  # no "Unknown" row
    assert list(cm.index) == classes and list(cm.columns) == [*classes, "Unknown"]
    assert cm.loc["A", "Unknown"] == 1 and cm.to_numpy().sum() == 10
    assert m["fraction_unknown"] == 0.1
    assert np.isclose(m["accuracy"], 0.6)
    assert np.isclose(per.loc["A", "recall"], 3 / 5)  # the Unknown cell is A's false negative
    assert np.isclose(per.loc["B", "precision"], 2 / 3)  # ... and no class' false positive
    assert np.isclose(m["macro_f1"], skm.f1_score(TRUE, PRED_UNKNOWN, labels=classes,
                                                  average="macro"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isclose(m["balanced_accuracy"], skm.balanced_accuracy_score(TRUE, PRED_UNKNOWN))
    assert np.isclose(m["micro_recall"], m["accuracy"])
    assert np.isclose(m["micro_precision"], skm.precision_score(
        TRUE, PRED_UNKNOWN, labels=classes, average="micro"))
    assert np.isclose(m["micro_precision"], 6 / 9)


def test_predicted_class_absent_from_truth_adds_a_column_only():
    truth = ["A", "A", "B", "B"]
    pred = ["A", "D", "B", "Unknown"]
    adata = _adata(truth, pred)
    sa.tl.evaluate(adata, "truth", "pred")
    ev = adata.uns["evaluation"]
    assert list(ev["confusion_matrix"].columns) == ["A", "B", "D", "Unknown"]
    assert list(ev["per_class"].index) == ["A", "B"]
    assert ev["metrics"]["accuracy"] == 0.5 and ev["metrics"]["fraction_unknown"] == 0.25


def test_unlabelled_cells_left_out():
    truth = [*TRUE, np.nan, "Unknown", "unassigned"]
    pred = [*PRED, "A", "B", "C"]
    adata = _adata(truth, pred)
    sa.tl.evaluate(adata, "truth", "pred")
    assert adata.uns["evaluation"]["params"]["n_cells_unlabelled"] == 2
    assert adata.uns["evaluation"]["metrics"]["n_cells"] == 11  # "unassigned" is a class here
    sa.tl.evaluate(adata, "truth", "pred", unlabeled_category="unassigned")
    ev = adata.uns["evaluation"]
    assert ev["params"]["n_cells_unlabelled"] == 2  # NaN and "unassigned"; "Unknown" is a class
    adata.obs.loc["c11", "truth"] = np.nan
    sa.tl.evaluate(adata, "truth", "pred", unlabeled_category="unassigned")
    ev = adata.uns["evaluation"]
    assert ev["params"]["n_cells_unlabelled"] == 3
    assert ev["metrics"]["n_cells"] == 10 and np.isclose(ev["metrics"]["accuracy"], 0.6)

    with pytest.raises(ValueError, match="No cell to evaluate"):
        sa.tl.evaluate(_adata(["Unknown", np.nan], ["A", "B"]), "truth", "pred")


def test_missing_columns_and_predictions():
    adata = _adata(TRUE, PRED)
    with pytest.raises(KeyError, match="'cgran_prediction'.*available: 'truth', 'pred'"):
        sa.tl.evaluate(adata, "truth", "cgran_prediction")
    with pytest.raises(KeyError, match="labels_key 'cell_type'"):
        sa.tl.evaluate(adata, "cell_type", "pred")
    adata.obs.loc["c0", "pred"] = np.nan
    with pytest.raises(ValueError, match="1 labelled cells have no prediction"):
        sa.tl.evaluate(adata, "truth", "pred")
    assert "evaluation" not in adata.uns


def test_copy_leaves_original_untouched():
    adata = _adata(TRUE, PRED)
    obs_before = adata.obs.copy()
    out = sa.tl.evaluate(adata, "truth", "pred", copy=True)
    assert isinstance(out, ad.AnnData) and "evaluation" in out.uns
    assert "evaluation" not in adata.uns
    pd.testing.assert_frame_equal(adata.obs, obs_before)
    sa.tl.evaluate(adata, "truth", "pred")
    pd.testing.assert_frame_equal(adata.obs, obs_before)  # only uns is written
    assert list(adata.uns) == ["evaluation"]


def test_h5ad_round_trip(tmp_path):
    adata = _adata(TRUE, PRED_UNKNOWN)
    sa.tl.evaluate(adata, "truth", "pred")
    adata.write_h5ad(tmp_path / "ev.h5ad")
    back = ad.read_h5ad(tmp_path / "ev.h5ad")
    ev, ev0 = back.uns["evaluation"], adata.uns["evaluation"]
    for k in ("per_class", "confusion_matrix"):
        pd.testing.assert_frame_equal(ev[k], ev0[k], check_names=False, check_index_type=False,
                                      check_column_type=False)
    assert {k: float(v) for k, v in ev["metrics"].items()} == pytest.approx(ev0["metrics"])
    assert ev["params"]["labels_key"] == "truth"
    sa.pl.confusion_matrix(back, show=False)  # the plot reads the round-tripped result


def test_categorical_and_integer_truth_vs_string_predictions():
    truth = pd.Categorical(TRUE)
    adata = _adata(truth, pd.Categorical(PRED))
    s1 = sa.tl.evaluate(adata, "truth", "pred")
    assert np.isclose(s1["accuracy"], 0.6)
    to_int = {"A": 1, "B": 2, "C": 3}
    ints = pd.Series([to_int[t] for t in TRUE], dtype=float)
    ints.iloc[0] = np.nan  # ints become floats next to a NaN: 1.0 must match "1"
    adata = _adata(ints.to_numpy(), [str(to_int[p]) for p in PRED])
    sa.tl.evaluate(adata, "truth", "pred")
    ev = adata.uns["evaluation"]
    assert list(ev["per_class"].index) == ["1", "2", "3"]
    assert ev["params"]["n_cells_unlabelled"] == 1
    assert np.isclose(ev["metrics"]["accuracy"], 5 / 9)


def test_single_class_and_perfect_predictions():
    adata = _adata(["A"] * 4, ["A", "A", "Unknown", "B"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sa.tl.evaluate(adata, "truth", "pred")
    m = adata.uns["evaluation"]["metrics"]
    assert m["accuracy"] == 0.5 and m["micro_specificity"] == 0.0 and m["n_classes"] == 1
    adata = _adata(TRUE, TRUE)
    s = sa.tl.evaluate(adata, "truth", "pred")
    assert (s.drop(["fraction_unknown", "n_cells", "n_classes"]) == 1.0).all()


def test_evaluate_after_predict(trained):
    model, adata = trained
    adata = adata.copy()
    model.predict(adata)
    s = sa.tl.evaluate(adata, "label", "cgran_prediction")
    assert adata.uns["evaluation"]["params"]["n_cells_unlabelled"] == 15
    assert s["n_cells"] == 135 and 0 <= s["accuracy"] <= 1
