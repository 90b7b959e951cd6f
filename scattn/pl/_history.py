"""Training history plot."""

from __future__ import annotations

from matplotlib.axes import Axes

from scattn._docs import scattn_dsp

from ._base import finish, new_axes


@scattn_dsp.dedent
def training_history(
    model,
    *,
    metrics: tuple[str, ...] = ("loss", "accuracy"),
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Training and validation curves from ``model.history``.

    Parameters
    ----------
    model
        A trained scattn model.
    metrics
        ``"loss"`` (``train_loss``/``validation_loss``) and/or ``"accuracy"``
        (``accuracy_train``/``accuracy_validation``); one panel each. With `ax`, only the first.
    %(show)s
    """
    import matplotlib.pyplot as plt

    history = getattr(model, "history", None)
    if not history:
        raise ValueError("The model has no training history; train it first.")
    pairs = {
        "loss": ("train_loss", "validation_loss"),
        "accuracy": ("accuracy_train", "accuracy_validation"),
    }
    unknown = [m for m in metrics if m not in pairs]
    if unknown or not metrics:
        raise ValueError(f"metrics must be among {tuple(pairs)}, got {metrics}.")
    if ax is not None:
        metrics = metrics[:1]
        fig, axes = new_axes(ax, (4, 3))
        axes = [axes]
    else:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
        axes = list(axes[0])
    for metric, a in zip(metrics, axes, strict=True):
        for key, style in zip(pairs[metric], ("-", "--"), strict=True):
            if key in history:
                series = history[key].iloc[:, 0].dropna()
                a.plot(series.index, series.to_numpy(), style, label=key.replace("_", " "))
        a.set_xlabel("epoch")
        a.set_ylabel(metric)
        a.legend(frameon=False)
        a.spines[["top", "right"]].set_visible(False)
    if ax is None:
        fig.tight_layout()
    return finish(fig, axes[0], show=show, return_fig=return_fig, ax_given=ax is not None)
