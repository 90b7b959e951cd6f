"""The one place that handles ``ax``, ``show`` and ``return_fig`` for every plot."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """Return ``(figure, axes)``: the given axes' figure, or a new figure."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def finish(fig: Figure, ax, *, show: bool | None, return_fig: bool, ax_given: bool):
    """Show and/or return, scanpy style.

    Returns the figure with `return_fig`, else the axes when not shown; `None` when shown.
    """
    if show is None:
        show = not (return_fig or ax_given)
    if show:
        plt.show()
        return None
    return fig if return_fig else ax
