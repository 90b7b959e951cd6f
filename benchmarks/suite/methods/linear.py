"""Logistic regression and a linear SVM (scikit-learn, C = 1) on log1p(CP10k) of all genes;
markers: the largest positive coefficients of each class."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ._base import Fitted, Split, cp10k, top_from_scores, train_labels


def _fit_linear(estimator, split: Split) -> Fitted:
    estimator.fit(cp10k(split, split.train), train_labels(split))

    def predict(test: AnnData) -> np.ndarray:
        return np.asarray(estimator.predict(cp10k(split, test)), dtype=str)

    def markers(k: int) -> dict[str, list[str]]:
        coef = estimator.coef_
        if coef.shape[0] == 1:  # binary: one row, positive for classes_[1]
            coef = np.vstack([-coef, coef])
        return top_from_scores(coef, estimator.classes_, split.train.var_names, k)

    return Fitted(predict, markers=markers)


def fit_lr(split, seed, budget):
    from sklearn.linear_model import LogisticRegression

    return _fit_linear(LogisticRegression(max_iter=2000, C=1.0), split)


def fit_svm(split, seed, budget):
    from sklearn.svm import LinearSVC

    return _fit_linear(LinearSVC(C=1.0, random_state=seed), split)
