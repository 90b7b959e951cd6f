"""Quiet by default: silence third-party chatter while scattn runs a model.

At the default :attr:`scattn.settings.verbosity` (``WARNING``) a user sees a progress bar and
what they must act on, nothing else. Inside :func:`quiet` the few loggers and warnings that
Lightning, scvi-tools and torch emit on every ``train``/``predict`` are turned down; with
``scattn.settings.verbosity = "info"`` (or ``"debug"``) :func:`quiet` does nothing and all of
it is shown again.

Nothing is changed at import time and nothing outside the block: logger levels are raised on
entry and put back on exit, the warning filters live in a :func:`warnings.catch_warnings`
local to the block, and scvi-tools' early-stopping print and its "Exception raised during
training." print are rerouted only while the block runs.
Not thread-safe (neither are :mod:`warnings` filters).

Model code uses it as a context manager or a decorator::

    from scattn._quiet import quiet

    with quiet():
        runner()

    @quiet()
    def train(self, ...): ...
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from scattn._compat import private

__all__ = ["CHATTER_WARNINGS", "CHATTY_LOGGERS", "is_quiet", "quiet", "user_stacklevel"]

logger = logging.getLogger(__name__)

#: packages whose frames a warning never points at: scattn's and the libraries it calls back from
_LIBRARY_FRAMES = ("scattn", "scvi", "anndata", "lightning", "pytorch_lightning", "torch")


def user_stacklevel() -> int:
    """The ``stacklevel`` for :func:`warnings.warn`, called in the function that warns, that
    points at the user's code: the first calling frame outside scattn (and outside the
    libraries that call back into it, e.g. scvi-tools registering a field), however deep the
    call went inside the package."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _LIBRARY_FRAMES:
        frame, level = frame.f_back, level + 1
    return level

#: Third-party loggers whose messages at INFO and below are chatter, and the level they get
#: inside :func:`quiet` (their WARNING and ERROR records still show).
CHATTY_LOGGERS: dict[str, int] = {
    # Lightning's `rank_zero_info` (lightning_utilities' rank-zero module logs to whichever of
    # these was imported last): "GPU available: ..., used: ...", "TPU available: ...",
    # "💡 Tip: ... litlogger ..." / "... litmodels ...", "`Trainer.fit` stopped: `max_epochs=N`
    # reached.", "You are using a CUDA device (...) that has Tensor Cores ..."
    "lightning.pytorch.utilities.rank_zero": logging.WARNING,
    "lightning.fabric.utilities.rank_zero": logging.WARNING,
    "pytorch_lightning.utilities.rank_zero": logging.WARNING,
    "lightning_fabric.utilities.rank_zero": logging.WARNING,
    # "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]" on every GPU fit
    "lightning.pytorch.accelerators.cuda": logging.WARNING,
    "pytorch_lightning.accelerators.cuda": logging.WARNING,
    # "Seed set to N" whenever scvi.settings.seed is set (scattn does on every train)
    "lightning.fabric.utilities.seed": logging.WARNING,
    "lightning_fabric.utilities.seed": logging.WARNING,
    # "Input AnnData not setup with scvi-tools. attempting to transfer AnnData setup" (every
    # predict on new data), "AnnData object appears to be a copy. Attempting to transfer
    # setup.", "Model was loaded without AnnData. Setting up provided AnnData using saved
    # registry."
    "scvi.model.base._base_model": logging.WARNING,
    # "File .../model.pt already downloaded" on every load
    "scvi.data._download": logging.WARNING,
    # "Training for N epochs."
    "scvi.model.base._training_mixin": logging.WARNING,
}

#: Warnings that are chatter, as ``(message regex, category)``; inside :func:`quiet` they are
#: ignored. The regexes match the start of the message (as :func:`warnings.filterwarnings`).
CHATTER_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # torch >= 2.10 deprecates LeafSpec, which Lightning's _pytree still uses on every fit
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", DeprecationWarning),
    # lightning PossibleUserWarning (a UserWarning): scvi-tools' history is per epoch, so
    # Lightning's step logging interval means nothing to a scattn user
    (r"The number of training batches \(\d+\) is smaller than the logging interval", UserWarning),
    # lightning PossibleUserWarning on machines with more than 2 CPUs; scvi-tools means to
    # filter it (its filter matches the older text "The dataloader, ...")
    (r"The '\w+' does not have many workers which may be a bottleneck", UserWarning),
)


def is_quiet() -> bool:
    """Whether :func:`quiet` silences chatter now: ``scattn.settings.verbosity`` above INFO."""
    from scattn._settings import settings

    return settings.verbosity > logging.INFO


@contextmanager
def quiet() -> Iterator[None]:
    """Silence third-party chatter for the duration of the block (or decorated call).

    Unless :attr:`scattn.settings.verbosity` is ``INFO`` or more verbose, raises the loggers in
    :data:`CHATTY_LOGGERS` to their level, ignores the warnings in :data:`CHATTER_WARNINGS`
    (in a :func:`warnings.catch_warnings` block) and routes scvi-tools' early-stopping print
    ("Monitored metric ... did not improve ...") to the ``scattn`` logger at INFO and its
    "Exception raised during training." print to DEBUG; all of it
    is restored on exit, also on an exception. Other warnings, scattn's own and scvi-tools'
    (e.g. about count data), pass through unchanged. Nests; usable as ``@quiet()``.
    """
    if not is_quiet():
        yield
        return
    with ExitStack() as stack:
        for name, level in CHATTY_LOGGERS.items():
            log = logging.getLogger(name)
            if log.level < level:  # never lower a level the user raised
                stack.callback(log.setLevel, log.level)
                log.setLevel(level)
        stack.enter_context(warnings.catch_warnings())
        for message, category in CHATTER_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        _reroute_early_stopping_print(stack)
        _reroute_failed_training_print(stack)
        yield


def _reroute_early_stopping_print(stack: ExitStack) -> None:
    """scvi-tools' ``LoudEarlyStopping`` prints why training stopped; log it at INFO instead."""
    try:
        LoudEarlyStopping = private("LoudEarlyStopping")
    except ImportError:  # another scvi-tools layout: leave it as it is
        return
    original = LoudEarlyStopping.__dict__.get("teardown")
    if original is None:
        return

    def teardown(self, trainer, pl_module, stage=None) -> None:
        reason = getattr(self, "early_stopping_reason", None)
        if reason is not None:
            logger.info(reason)

    LoudEarlyStopping.teardown = teardown
    stack.callback(setattr, LoudEarlyStopping, "teardown", original)


def _reroute_failed_training_print(stack: ExitStack) -> None:
    """scvi-tools' ``TrainRunner`` prints "Exception raised during training." before it
    re-raises any error of a fit (the user sees the error itself anyway); log it at DEBUG
    instead. Its module gets a ``print`` of its own for the block (other prints pass through)."""
    try:
        _trainrunner = private("trainrunner_module")
    except ImportError:  # another scvi-tools layout: leave it as it is
        return
    if "print" in vars(_trainrunner):  # an enclosing block has rerouted it already
        return

    def routed(*args, **kwargs) -> None:
        if args and isinstance(args[0], str) and args[0].startswith("Exception raised during training"):
            logger.debug(" ".join(map(str, args)))
            return
        print(*args, **kwargs)

    _trainrunner.print = routed
    stack.callback(delattr, _trainrunner, "print")
