"""Reading what scattn models and tools wrote (the counterpart of :mod:`scattn._write`), for
the tools (``sa.tl``) and plots (``sa.pl``) alike: the key a model wrote its results under, the
markers at a key, and clear errors for a model output a tool cannot use.

Every model's ``predict(adata, key_added=key)`` records what it ran in
``adata.uns[key]["params"]`` (``model``, ``scattn_version``, ``key_added``, ...). Tools and
plots that are not given a key look for these records, keep those holding the slots they read
(an attention layer, predictions, markers, ...) and use the one that is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

__all__ = ["SLOTS", "find_key", "model_results"]

_PREDICT = "`model.predict(adata)`"


@dataclass(frozen=True)
class _Slot:
    """A result a model (or a tool) writes under a key: where it lives and who writes it."""

    where: str  # readable location, with "{key}"
    present: Callable[[AnnData, str], bool]
    producer: str  # the call that writes it, in backticks


def _in_uns(name: str, field: str) -> Callable[[AnnData, str], bool]:
    def present(adata: AnnData, key: str) -> bool:
        entry = adata.uns.get(name.format(key=key))
        return isinstance(entry, Mapping) and field in entry

    return present


SLOTS: dict[str, _Slot] = {
    "prediction": _Slot("obs['{key}_prediction']", lambda a, k: f"{k}_prediction" in a.obs, _PREDICT),
    "confidence": _Slot("obs['{key}_confidence']", lambda a, k: f"{k}_confidence" in a.obs, _PREDICT),
    "probabilities": _Slot(
        "obsm['{key}_probabilities']", lambda a, k: f"{k}_probabilities" in a.obsm, _PREDICT
    ),
    "embedding": _Slot("obsm['X_{key}']", lambda a, k: f"X_{k}" in a.obsm, _PREDICT),
    "attention": _Slot("layers['{key}_attention']", lambda a, k: f"{k}_attention" in a.layers, _PREDICT),
    "markers": _Slot("uns['{key}_markers']", _in_uns("{key}_markers", "names"), _PREDICT),
    "gene_sets": _Slot(
        "uns['{key}_gene_sets']", _in_uns("{key}_gene_sets", "attention"),
        "`sa.tl.gene_sets_from_attention(adata, model)`",
    ),
    "feature_importances": _Slot(
        "uns['{key}']['feature_importances']", _in_uns("{key}", "feature_importances"),
        "`model.predict(adata)` with a SIMS model",
    ),
    "class_importances": _Slot(
        "uns['{key}']['class_importances']", _in_uns("{key}", "class_importances"),
        "`model.predict(adata)` with a SIMS model",
    ),
}
"""What :func:`find_key` can require, by name."""


def model_results(adata: AnnData) -> dict[str, Mapping]:
    """Every scattn model result recorded in `adata`: ``{key: params}``, in ``uns`` order.

    A result is an entry ``adata.uns[key]`` that is a dict with a ``params`` dict holding
    ``model`` and ``scattn_version`` (and, when present, ``key_added == key``), as every
    model's ``predict`` writes. Tool results (``novelty``, ``evaluation``, markers) have no
    ``model`` and are not listed.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    found = {}
    for key, entry in adata.uns.items():
        if not isinstance(entry, Mapping):
            continue
        params = entry.get("params")
        if not isinstance(params, Mapping) or "model" not in params or "scattn_version" not in params:
            continue
        if str(params.get("key_added", key)) != str(key):
            continue
        found[str(key)] = params
    return found


def _and(items: list[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def find_key(
    adata: AnnData,
    *,
    needs: Iterable[str] = (),
    model: str | None = None,
    argument: str = "key",
    template: str = "{key}",
) -> str:
    """The ``key_added`` of the one scattn model result in `adata` that a caller can use.

    Scans ``adata.uns`` for model records (see :func:`model_results`), keeps those holding
    every slot in `needs` (of them, those of class `model` if there are any) and returns the
    key when exactly one is left.

    Parameters
    ----------
    adata
        AnnData a model predicted into.
    needs
        Names of slots (keys of :data:`SLOTS`) the result must hold, e.g.
        ``("attention", "prediction")`` for ``layers[f"{key}_attention"]`` and
        ``obs[f"{key}_prediction"]``.
    model
        Prefer results of this model class (``params["model"]``, e.g. ``"CGRAN"``): when any
        of them holds what is needed, results of other models are ignored.
    argument
        Name of the caller's argument that takes the key explicitly; used in messages.
    template
        How a key maps to the value of `argument` (e.g. ``"{key}_markers"``); used in
        messages.

    Returns
    -------
    The key (the ``key_added`` of the model's ``predict``).

    Raises
    ------
    ValueError
        When no result holds what is needed (saying what is missing and what to run), or
        when several do (listing them and asking for `argument`).
    """
    needs = tuple(needs)
    unknown = [n for n in needs if n not in SLOTS]
    if unknown:
        raise ValueError(f"Unknown slots {unknown}; choose from {sorted(SLOTS)}.")
    records = model_results(adata)
    what = _and([SLOTS[n].where.replace("{key}", "<key>") for n in needs]) or "results"
    producers = list(dict.fromkeys(SLOTS[n].producer for n in needs)) or [_PREDICT]
    if not records:
        predicts = any(p.startswith(_PREDICT) for p in producers)
        steps = producers if predicts else [_PREDICT, *producers]
        raise ValueError(
            "No scattn model results in adata (no adata.uns[key]['params'] written by a "
            f"model's predict). Run {' then '.join(steps)} first, or pass "
            f"`{argument}=`."
        )
    problems, candidates = [], []
    for key, params in records.items():
        missing = [SLOTS[n].where.format(key=key) for n in needs if not SLOTS[n].present(adata, key)]
        if missing:
            problems.append(f"{key!r} ({params['model']}) lacks {_and(missing)}")
        else:
            candidates.append(key)
    if model is not None and any(records[k]["model"] == model for k in candidates):
        candidates = [k for k in candidates if records[k]["model"] == model]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(
            f"No scattn model result in adata holds {what}: "
            f"{'; '.join(problems)}. Run {' or '.join(producers)} first, or "
            f"pass `{argument}=`."
        )
    listed = ", ".join(f"{k!r} ({records[k]['model']})" for k in candidates)
    choices = " or ".join(f"{argument}={template.format(key=k)!r}" for k in candidates)
    raise ValueError(
        f"adata holds several scattn model results with {what}: "
        f"{listed}. Choose one: {choices}."
    )


def get_markers(adata: AnnData, key: str) -> dict:
    """The marker result at ``adata.uns[key]`` (``rank_genes_groups`` layout), or a clear error."""
    if key not in adata.uns or "names" not in adata.uns[key]:
        raise KeyError(
            f"No markers at adata.uns[{key!r}]; run `model.predict(adata)` or "
            "`sa.tl.marker_genes_from_attention` first."
        )
    return adata.uns[key]


def check_method(model, method: str, tool: str) -> None:
    """A clear error unless `model` has the callable `method` (an scGPT-like model)."""
    if model is None or not callable(getattr(model, method, None)):
        raise TypeError(
            f"{tool} needs an scGPT-like model with `{method}` (e.g. a trained "
            f"`sa.model.SCGPT`), got {type(model).__name__}."
        )


def is_int(value, low: int) -> bool:
    """Whether `value` is an integer (not a bool) of at least `low`."""
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= low


def model_genes(frame, what: str) -> pd.Index:
    """The model's gene IDs (as strings) of a DataFrame `what` returned."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"The model's {what} must be a pandas DataFrame indexed by its gene IDs, "
            f"got {type(frame).__name__}."
        )
    return pd.Index(frame.index.astype(str))
