"""Package-wide settings: seed, verbosity, batch size and progress bar.

Nothing here touches global logging or warning filters at import time; the named logger
``scattn`` gets a handler only when :attr:`ScattnConfig.verbosity` is set by the user.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

logger = logging.getLogger("scattn")


class ScattnConfig:
    """Global configuration for scattn, available as ``scattn.settings``.

    Examples
    --------
    >>> import scattn as sa
    >>> sa.settings.seed = 0  # seeds python, numpy, torch and scvi-tools
    >>> sa.settings.batch_size = 256
    >>> sa.settings.progress_bar = False  # no bars, in training nor in long predictions
    """

    def __init__(self) -> None:
        self._seed: int | None = None
        self._batch_size = 128
        self._progress_bar = True
        self._chunk_size = 20_000
        self._verbosity = logging.WARNING
        self._handler: logging.Handler | None = None

    @property
    def seed(self) -> int | None:
        """Random seed; setting it seeds python, numpy, torch and scvi-tools (deterministic on CPU)."""
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        if value is None:
            self._seed = None
            return
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise TypeError(f"seed must be an int or None, got {type(value).__name__}.")
        self._seed = int(value)
        seed_everything(self._seed)

    @property
    def batch_size(self) -> int:
        """Default minibatch size for training and inference."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"batch_size must be a positive int, got {value!r}.")
        self._batch_size = int(value)

    @property
    def chunk_size(self) -> int:
        """Cells read, aligned and predicted at once by ``predict`` and the other inference
        methods on data other than the model's own (default 20,000).

        Memory grows with it (the chunk's expression, in memory, plus the model's activations
        a minibatch at a time); a backed or zarr AnnData is read one chunk at a time.
        """
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"chunk_size must be a positive int, got {value!r}.")
        self._chunk_size = int(value)

    @property
    def progress_bar(self) -> bool:
        """Whether training, long predictions and long passes over data on disk show a
        progress bar."""
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool) -> None:
        self._progress_bar = bool(value)

    @property
    def verbosity(self) -> int:
        """Logging level of the ``scattn`` logger (e.g. ``logging.INFO`` or ``"info"``).

        At the default, ``WARNING``, scattn shows a progress bar and what needs acting on,
        nothing else: while a model trains, predicts or loads, Lightning's and scvi-tools'
        informational lines ("GPU available", tips, "Input AnnData not setup with
        scvi-tools...", "Seed set to N", why early stopping stopped) and their chatter warnings
        (torch's ``LeafSpec`` deprecation, ``log_every_n_steps``, dataloader ``num_workers``) are
        silenced (see :func:`scattn._quiet.quiet`). ``"info"`` (or ``"debug"``) shows all of
        them again, and scattn's own INFO messages.
        """
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        if isinstance(value, str):
            level = logging.getLevelName(value.upper())
            if not isinstance(level, int):
                raise ValueError(f"Unknown verbosity {value!r}.")
            value = level
        self._verbosity = int(value)
        logger.setLevel(self._verbosity)
        if self._handler is None:
            self._handler = logging.StreamHandler()
            self._handler.setFormatter(logging.Formatter("%(levelname)s [scattn] %(message)s"))
            logger.addHandler(self._handler)

    def __repr__(self) -> str:
        return (
            f"ScattnConfig(seed={self.seed}, batch_size={self.batch_size}, "
            f"chunk_size={self.chunk_size}, progress_bar={self.progress_bar}, verbosity={logging.getLevelName(self.verbosity)})"
        )


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and scvi-tools for deterministic CPU runs."""
    import scvi

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- seeding the legacy global RNG is the point here
    torch.manual_seed(seed)
    # Lightning logs "Seed set to N"; silenced like the rest of scattn._quiet.CHATTY_LOGGERS
    # (that module imports this one, so not through it)
    seed_logger = logging.getLogger("lightning.fabric.utilities.seed")
    old_level = seed_logger.level
    if settings.verbosity > logging.INFO and old_level < logging.WARNING:
        seed_logger.setLevel(logging.WARNING)
    try:
        scvi.settings.seed = seed
    finally:
        seed_logger.setLevel(old_level)


settings = ScattnConfig()
