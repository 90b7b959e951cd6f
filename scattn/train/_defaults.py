"""Training defaults of every model, as class attributes, and the one step-budget rule.

Every ``train()`` and ``pretrain()`` takes the same arguments (``max_epochs, lr, weight_decay,
batch_size, train_size, validation_size, early_stopping, early_stopping_patience,
restore_best_weights, accelerator, devices, precision, plan_kwargs, datasplitter_kwargs,
**trainer_kwargs``); an argument left at `None` takes the model's default, declared once as a
:class:`TrainDefaults` class attribute (``_train_defaults``, ``_pretrain_defaults``) and shown
in the documentation's generated table (:func:`defaults_table`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepBudget:
    """A number of epochs that grows where epochs are short: ``max(epochs, ceil(steps / s))``
    for ``s`` optimiser steps per epoch (a few dozen cells make one or two steps an epoch, and
    an epoch count alone would stop before anything is learnt)."""

    epochs: int
    steps: int

    def resolve(self, steps_per_epoch: int) -> int:
        """The number of epochs for `steps_per_epoch` optimiser steps an epoch."""
        return max(self.epochs, math.ceil(self.steps / max(1, steps_per_epoch)))

    def __str__(self) -> str:
        return f"{self.epochs}, or {self.steps} steps"


@dataclass(frozen=True)
class Rule:
    """A default computed from the data by the model (described in its docstring)."""

    text: str

    def __str__(self) -> str:
        return self.text


#: scVI's epoch rule, ``min(400, round(20000 / n_cells * 400))``
SCVI_EPOCHS = Rule("scVI's rule")
#: :attr:`scattn.settings.batch_size`
SETTINGS_BATCH_SIZE = Rule("settings.batch_size")


@dataclass(frozen=True)
class TrainDefaults:
    """The defaults of one model's ``train()`` (or ``pretrain()``): what an argument left at
    `None` becomes. ``max_epochs`` and ``early_stopping_patience`` may be a
    :class:`StepBudget`; ``max_epochs`` and ``batch_size`` may be a model's :class:`Rule`."""

    max_epochs: int | StepBudget | Rule
    lr: float
    weight_decay: float
    batch_size: int | Rule
    train_size: float = 0.9
    validation_size: float | None = None
    early_stopping: bool = True
    early_stopping_patience: int | StepBudget = 10
    restore_best_weights: bool = False
    #: Lightning's ``precision`` (`None`: Lightning's default, 32-bit)
    precision: str | int | None = None
    #: the model's own arguments, shown in the table (name -> default)
    extra: dict = field(default_factory=dict)

    def replace(self, **changes) -> TrainDefaults:
        """A copy with `changes` (a model derived from another changes a few defaults)."""
        return dataclasses.replace(self, **changes)


#: the arguments every train()/pretrain() shares, in signature order
SHARED_ARGUMENTS = ("max_epochs", "lr", "weight_decay", "batch_size", "train_size", "validation_size",
                    "early_stopping", "early_stopping_patience", "restore_best_weights", "accelerator",
                    "devices", "precision", "plan_kwargs", "datasplitter_kwargs")


@dataclass
class TrainArgs:
    """The arguments of one run with every `None` replaced by the model's default (budgets
    still as :class:`StepBudget` until :meth:`resolve_budgets`)."""

    max_epochs: int | StepBudget | Rule
    lr: float
    weight_decay: float
    batch_size: int | Rule
    train_size: float
    validation_size: float | None
    early_stopping: bool
    early_stopping_patience: int | StepBudget
    restore_best_weights: bool
    precision: str | int | None

    @classmethod
    def of(cls, defaults: TrainDefaults, **given) -> TrainArgs:
        """`given` (a `None` value: not given) over `defaults`."""
        values = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(cls)}
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)

    @property
    def has_validation(self) -> bool:
        """Whether the split asks for validation cells."""
        return ((1 - self.train_size) if self.validation_size is None else self.validation_size) > 0

    def resolve_budgets(self, steps_per_epoch: int) -> None:
        """Turn step budgets into epochs for `steps_per_epoch` optimiser steps an epoch."""
        if isinstance(self.max_epochs, StepBudget):
            self.max_epochs = self.max_epochs.resolve(steps_per_epoch)
        if isinstance(self.early_stopping_patience, StepBudget):
            self.early_stopping_patience = self.early_stopping_patience.resolve(steps_per_epoch)


def training_cells(n_cells: int, train_size: float, validation_size: float | None) -> int:
    """Training cells of a split of `n_cells` (scvi-tools' rule for its data splitter)."""
    from scattn._compat import validate_data_split

    n_train, _ = validate_data_split(n_cells, train_size, validation_size, None, False, False)
    return int(n_train)


def steps_per_epoch(n_cells: int, train_size: float, validation_size: float | None, batch_size: int,
                    *, n_processes: int = 1, drop_last: bool = False) -> int:
    """Optimiser steps in one training epoch of each of `n_processes` processes (DDP shares
    every epoch's cells among them): the one budget rule every model's defaults go through."""
    per_process = math.ceil(training_cells(n_cells, train_size, validation_size) / max(1, n_processes))
    steps = per_process // batch_size if drop_last else math.ceil(per_process / batch_size)
    return max(1, steps)


def _shown(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def defaults_table(models: dict[str, type]) -> str:
    """A markdown table of every model's ``train()`` and ``pretrain()`` defaults (`models`:
    name -> class), the table the documentation shows."""
    rows = []
    for name, cls in models.items():
        for call, attr in (("train", "_train_defaults"), ("pretrain", "_pretrain_defaults")):
            defaults = getattr(cls, attr, None)
            if defaults is None:
                continue
            extra = ", ".join(f"{k}={_shown(v)}" for k, v in defaults.extra.items()) or "-"
            rows.append([f"`{name}.{call}`", _shown(defaults.max_epochs), _shown(defaults.lr),
                         _shown(defaults.weight_decay), _shown(defaults.batch_size),
                         _shown(defaults.train_size), _shown(defaults.validation_size),
                         _shown(defaults.early_stopping), _shown(defaults.early_stopping_patience),
                         _shown(defaults.restore_best_weights), _shown(defaults.precision or "32-true"),
                         extra])
    head = ["call", "max_epochs", "lr", "weight_decay", "batch_size", "train_size", "validation_size",
            "early_stopping", "early_stopping_patience", "restore_best_weights", "precision",
            "the model's own"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
