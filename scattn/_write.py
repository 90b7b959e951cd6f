"""Writing results into an AnnData all-or-nothing, saying what is overwritten."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from anndata import AnnData

logger = logging.getLogger("scattn")

_SLOTS = ("obs", "var", "obsm", "layers", "uns")
_MISSING = object()


def write_results(adata: AnnData, items: Iterable[tuple[str, str, object]], *, by: str) -> None:
    """Assign every ``(slot, key, value)`` into `adata` (slot: obs, var, obsm, layers or uns).

    Either all are written or, if one assignment fails, none: the values that were there
    before are put back. A key that already holds something is overwritten, as scanpy does,
    with a warning on the ``scattn`` logger (shown at the default verbosity) naming the keys.
    `by` names the writer in that message.
    """
    items = list(items)
    for slot, _, _ in items:
        if slot not in _SLOTS:
            raise ValueError(f"Unknown AnnData slot {slot!r}.")
    present = [f"{slot}[{key!r}]" for slot, key, _ in items if key in getattr(adata, slot)]
    if present:
        logger.warning("%s overwrites %s.", by, ", ".join(present))
    done: list[tuple[str, str, object]] = []
    try:
        for slot, key, value in items:
            store = getattr(adata, slot)
            done.append((slot, key, store[key] if key in store else _MISSING))
            store[key] = value
    except BaseException:
        for slot, key, old in reversed(done):
            store = getattr(adata, slot)
            if old is _MISSING:
                if key in store:
                    del store[key]
            else:
                store[key] = old
        raise
