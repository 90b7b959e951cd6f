"""Classification metrics of predictions against true labels: the SIMS thesis' Table 0.1.

Accuracy, balanced accuracy, macro and median F1, micro precision, recall and
specificity, per-class metrics and a confusion matrix, for any scattn model's predictions
(``obs[f"{key}_prediction"]``) or any other column of predicted labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix

from scattn._docs import scattn_dsp
from scattn._read import find_key
from scattn._write import write_results
from scattn.data import label_strings

#: The label a scattn model gives cells predicted below its confidence threshold.
UNKNOWN = "Unknown"


def _column(adata: AnnData, key: str, what: str) -> pd.Series:
    if key not in adata.obs:
        available = ", ".join(map(repr, adata.obs.columns)) or "none"
        raise KeyError(f"{what} {key!r} is not a column of adata.obs (available: {available}).")
    return adata.obs[key]


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, 0 where ``den`` is 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Metrics, per-class table and confusion matrix of string labels (see :func:`evaluate`)."""
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    classes = sorted(set(y_true))
    extra = sorted(set(y_pred) - set(classes), key=lambda c: (c == UNKNOWN, c))
    labels = classes + extra
    full = _sk_confusion_matrix(y_true, y_pred, labels=labels)[: len(classes)]
    n_cells = int(full.sum())

    tp = np.diag(full[:, : len(classes)]).astype(np.int64)
    support = full.sum(1)  # true cells per class
    n_predicted = full[:, : len(classes)].sum(0)  # cells predicted as each class
    fp = n_predicted - tp
    fn = support - tp
    tn = n_cells - tp - fp - fn

    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    specificity = _safe_div(tn, tn + fp)
    f1 = _safe_div(2 * precision * recall, precision + recall)

    per_class = pd.DataFrame(
        {
            "precision": precision,
            "recall": recall,
            "specificity": specificity,
            "f1": f1,
            "support": support.astype(np.int64),
            "n_predicted": n_predicted.astype(np.int64),
        },
        index=pd.Index(classes, name="class"),
    )
    cm = pd.DataFrame(
        full.astype(np.int64),
        index=pd.Index(classes, name="true"),
        columns=pd.Index(labels, name="predicted"),
    )
    metrics = {
        "accuracy": float(tp.sum() / n_cells),
        "balanced_accuracy": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "median_f1": float(np.median(f1)),
        "weighted_f1": float(np.average(f1, weights=support)),
        "micro_precision": float(_safe_div(tp.sum(), (tp + fp).sum())),
        "micro_recall": float(_safe_div(tp.sum(), (tp + fn).sum())),
        "micro_specificity": float(_safe_div(tn.sum(), (tn + fp).sum())),
        "fraction_unknown": float(np.mean(y_pred == UNKNOWN)),
        "n_cells": n_cells,
        "n_classes": len(classes),
    }
    return metrics, per_class, cm


@scattn_dsp.dedent
def evaluate(
    adata: AnnData,
    labels_key: str,
    prediction_key: str | None = None,
    *,
    unlabeled_category: str = "Unknown",
    key_added: str | None = None,
    copy: bool = False,
) -> pd.Series | AnnData:
    """Score predicted labels against true labels (the SIMS thesis' Table 0.1 metrics).

    Works with any scattn model's predictions (``obs["cgran_prediction"]``,
    ``obs["sims_prediction"]``, ...) or any column of predicted labels. Labels are compared as
    strings, so a categorical or integer truth matches string predictions (``1.0`` and ``1``
    are the same label).

    Which cells and classes count:

    - Cells whose true label is NaN or `unlabeled_category` are left out (their number is
      recorded as ``n_cells_unlabelled``). Every evaluated cell needs a prediction.
    - The classes are the true labels present among the evaluated cells, sorted. A prediction
      that is not one of them (``"Unknown"`` from a confidence threshold, or a class the
      evaluated cells do not have) is wrong for that cell's true class, lowering its recall,
      and adds no row to the per-class table (it adds a column to the confusion matrix).

    With ``tp``, ``fp``, ``fn``, ``tn`` counted per class over the evaluated cells, a
    prediction outside the classes is a false negative of the cell's true class and a false
    positive of no class (an abstention, not a claim). Hence ``micro_recall`` equals
    ``accuracy``, while ``micro_precision`` is the accuracy among cells predicted as one of the
    classes; both equal ``accuracy`` when no prediction falls outside the classes. This matches
    scikit-learn's ``precision_score(..., labels=classes, average="micro")``. Divisions by zero
    give 0.

    Parameters
    ----------
    adata
        AnnData with true and predicted labels in ``obs``.
    labels_key
        Column of ``adata.obs`` with the true labels.
    prediction_key
        Column of ``adata.obs`` with the predicted labels, e.g. ``"cgran_prediction"``.
        `None`: the predictions of the one model that predicted into `adata`
        (``f"{key}_prediction"`` for the ``key_added`` recorded in
        ``adata.uns[key]["params"]``); a `ValueError` says when there is none or several.
    unlabeled_category
        True label of cells without a known type; they are left out, like NaN labels.
    key_added
        Key in ``adata.uns`` to write the results to; `None` means ``"evaluation"``.
    %(copy)s

    Returns
    -------
    With ``copy=False``, a :class:`pandas.Series` of the metrics below (float dtype, so the
    counts show as floats; they are ints in ``uns``), named `key_added`. With ``copy=True``, a
    copy of `adata` holding the results. Either way writes (into the copy with `copy`):

    ``adata.uns[key_added]["metrics"]``
        Dict of Python floats and ints:

        - ``accuracy``: fraction of evaluated cells predicted correctly;
        - ``balanced_accuracy``: mean per-class recall (scikit-learn's
          ``balanced_accuracy_score``). The thesis' Table 0.1 calls its column "weighted
          accuracy" and recommends it for imbalanced classes; averaging per-class accuracy
          by class support, as its text defines it, would equal plain accuracy;
        - ``macro_f1``, ``median_f1``, ``weighted_f1``: mean, median and support-weighted
          mean of the per-class F1;
        - ``micro_precision``, ``micro_recall``, ``micro_specificity``: ``sum(tp) /
          sum(tp + fp)``, ``sum(tp) / sum(tp + fn)``, ``sum(tn) / sum(tn + fp)`` over classes;
        - ``fraction_unknown``: fraction of evaluated cells predicted ``"Unknown"``;
        - ``n_cells``: evaluated cells; ``n_classes``: classes.
    ``adata.uns[key_added]["per_class"]``
        DataFrame, one row per class (index): ``precision``, ``recall``, ``specificity``,
        ``f1``, ``support`` (true cells of the class), ``n_predicted`` (cells predicted as it).
    ``adata.uns[key_added]["confusion_matrix"]``
        DataFrame of cell counts: rows the true classes, columns the true classes followed by
        any other predicted label (``"Unknown"`` last).
    ``adata.uns[key_added]["params"]``
        ``labels_key``, ``prediction_key`` (the one used, also when found),
        ``unlabeled_category``, ``n_cells_unlabelled``.

    Examples
    --------
    >>> model.predict(adata, key_added="cgran", unknown_threshold=0.5)
    >>> sa.tl.evaluate(adata, "cell_type")  # the one model's obs["cgran_prediction"]
    accuracy             0.93
    balanced_accuracy    0.88
    ...
    >>> adata.uns["evaluation"]["per_class"].sort_values("f1")
    >>> sa.pl.confusion_matrix(adata)

    Compare models side by side:

    >>> pd.DataFrame({k: sa.tl.evaluate(adata, "cell_type", f"{k}_prediction", key_added=f"{k}_eval")
    ...               for k in ("cgran", "sims")})
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    key_added = "evaluation" if key_added is None else key_added
    if prediction_key is None:
        key = find_key(adata, needs=("prediction",), argument="prediction_key",
                       template="{key}_prediction")
        prediction_key = f"{key}_prediction"
    truth = _column(adata, labels_key, "labels_key")
    pred = _column(adata, prediction_key, "prediction_key")

    truth_str = label_strings(truth)
    labelled = truth.notna().to_numpy() & (truth_str != str(unlabeled_category)).to_numpy()
    n_unlabelled = int((~labelled).sum())
    if not labelled.any():
        raise ValueError(
            f"No cell to evaluate: all {adata.n_obs} cells of adata.obs[{labels_key!r}] are "
            f"unlabelled (NaN or {unlabeled_category!r})."
        )
    missing = pred.isna().to_numpy() & labelled
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} labelled cells have no prediction in "
            f"adata.obs[{prediction_key!r}]; predict all cells, or subset adata to the "
            "predicted ones."
        )
    y_true = truth_str.to_numpy()[labelled]
    y_pred = label_strings(pred).to_numpy()[labelled]
    if not set(y_true) & (set(y_pred) - {UNKNOWN}):
        shown = ", ".join(map(repr, sorted(set(y_true))[:3]))
        raise ValueError(
            f"The labels in adata.obs[{labels_key!r}] ({shown}, ...) and the predictions in "
            f"adata.obs[{prediction_key!r}] ({', '.join(map(repr, sorted(set(y_pred))[:3]))}, ...) "
            "share no class name: are the labels codes rather than names? Compare the same kind "
            "of labels."
        )
    metrics, per_class, cm = classification_metrics(y_true, y_pred)
    params = {
        "labels_key": labels_key,
        "prediction_key": prediction_key,
        "unlabeled_category": str(unlabeled_category),
        "n_cells_unlabelled": n_unlabelled,
    }

    adata = adata.copy() if copy else adata
    write_results(adata, [("uns", key_added, {
        "metrics": metrics,
        "per_class": per_class,
        "confusion_matrix": cm,
        "params": params,
    })], by="sa.tl.evaluate")
    if copy:
        return adata
    return pd.Series(metrics, dtype=float, name=key_added)
