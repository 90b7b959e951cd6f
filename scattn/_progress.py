"""Progress bars for long inference and data-preparation passes (tqdm, as scvi-tools uses)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from scattn._settings import settings


class _NoBar:
    """Stands in for a bar that is not shown."""

    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def progress(*, total: int, desc: str, unit: str = "cells", show: bool = True) -> Iterator:
    """A tqdm bar over `total` `unit` while the block runs, with ``update(n)``.

    Shown only when `show` and :attr:`scattn.settings.progress_bar` are both true (set
    ``sa.settings.progress_bar = False`` to hide every scattn bar); the bar closes when the
    block ends, also on an error.
    """
    if not (show and settings.progress_bar):
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()
