"""What every scattn module shares: the inputs it asks for, its objectives, its gene panel, a head."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput
from torch import nn

from scattn.nn import GenePanel

from ._constants import MODULE_KEYS, OBJECTIVES


def classification_loss(logits: torch.Tensor, y: torch.Tensor, n_labels: int,
                        weight: torch.Tensor | None = None) -> LossOutput:
    """Cross-entropy over the labelled cells (codes below `n_labels`) of a minibatch.

    Cells with the unlabelled code (``n_labels``) do not enter the loss. A minibatch without
    labelled cells gives a zero loss that keeps the graph. `weight` (one per class) weights
    each cell's term by its class (the weighted mean of :func:`torch.nn.functional.cross_entropy`).
    Reports ``accuracy`` as an extra metric (``model.history["accuracy_train"]`` /
    ``["accuracy_validation"]``).
    """
    y = y.view(-1).long()
    labelled = y < n_labels
    n_lab = int(labelled.sum())
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=logits.dtype)
        if weight.shape != (logits.shape[-1],):
            raise ValueError(f"class_weights must have one weight per class ({logits.shape[-1]}), "
                             f"got shape {tuple(weight.shape)}.")
    if n_lab:
        ce = F.cross_entropy(logits[labelled], y[labelled], weight=weight)
        acc = (logits[labelled].argmax(-1) == y[labelled]).float().mean()
    else:
        ce = logits.sum() * 0.0
        acc = torch.zeros((), device=logits.device)
    return LossOutput(loss=ce, n_obs_minibatch=max(n_lab, 1), extra_metrics={"accuracy": acc})


class ScattnModule(BaseModuleClass):
    """Base of every scattn module (pure torch; never sees AnnData).

    A subclass declares

    * ``inference_inputs``: which registered tensors its ``inference`` reads, as
      ``{registry key: argument name}`` (default: the expression as ``x``); a module with a
      batch covariate adds ``{REGISTRY_KEYS.BATCH_KEY: "batch_index"}``, and so on;
    * ``objectives``: the training objectives (names in
      :data:`~scattn.module.OBJECTIVES`) it implements, each as a method
      ``<objective>_loss(tensors, inference_outputs, generative_outputs)``. A training plan
      names the objective (``loss_kwargs={"objective": ...}``); the first one is the default
      when ``loss`` is called directly.
    """

    inference_inputs: Mapping[str, str] = {REGISTRY_KEYS.X_KEY: "x"}
    objectives: tuple[str, ...] = ()

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """Buffers fitted on data before training (none here; see :class:`PanelModule`)."""
        return {}

    def fitted_state_keys(self) -> set[str]:
        """State-dict names of the fitted buffers (none here)."""
        return set()

    def head_parameter_names(self) -> list[str]:
        """Names of the classifier head's parameters (none here)."""
        return []

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [k for k in self.inference_inputs if k not in tensors]
        if missing:
            raise KeyError(f"{type(self).__name__} needs the registered fields {missing}; the model "
                           "must register them in setup_anndata.")
        return {arg: tensors[key] for key, arg in self.inference_inputs.items()}

    def _get_generative_input(self, tensors, inference_outputs) -> dict:
        return {}

    def generative(self, **kwargs) -> dict:
        """Nothing to generate unless a subclass says otherwise."""
        return {}

    def loss(self, tensors, inference_outputs, generative_outputs, objective: str | None = None,
             **loss_kwargs) -> LossOutput:
        """The loss of `objective` (one of ``self.objectives``; `None`: the first); `loss_kwargs`
        (e.g. ``class_weights``) go to the objective's loss."""
        if not self.objectives:
            raise ValueError(f"{type(self).__name__} declares no training objective.")
        objective = self.objectives[0] if objective is None else objective
        if objective not in self.objectives:
            raise ValueError(f"{type(self).__name__} cannot be trained for {objective!r}; its "
                             f"objectives are {', '.join(self.objectives)}.")
        return getattr(self, f"{objective}_loss")(tensors, inference_outputs, generative_outputs, **loss_kwargs)


class PanelModule(ScattnModule):
    """A module reading a panel of genes, with an optional classifier head.

    Subclasses build their network after ``super().__init__``, implement ``_make_head`` (the
    head for ``n`` classes) and call :meth:`add_head` where the head belongs (when
    `n_labels` is given; a model can add it later, e.g. after pretraining without labels).
    ``inference(x, ...)`` returns at least :data:`MODULE_KEYS.Z <scattn.module.MODULE_KEYS>`,
    and ``LOGITS`` when the module has a head.

    Parameters
    ----------
    n_input, gene_index, normalize_counts
        See :class:`~scattn.nn.GenePanel`.
    n_labels
        Number of known classes (at least two), or `None` for no classifier head yet.
    """

    objectives = (OBJECTIVES.CLASSIFICATION,)
    #: attribute holding the classifier head (its parameters are the head's, for transfer)
    head_name = "classifier"
    #: fitted buffers: constructor argument -> state-dict name (the gene positions aside)
    fitted_buffers: Mapping[str, str] = {}

    def __init__(self, n_input: int, gene_index: torch.Tensor, *, normalize_counts: bool = True) -> None:
        super().__init__()
        self.n_input = n_input
        self.n_labels: int | None = None
        self.genes = GenePanel(n_input, gene_index, normalize_counts=normalize_counts)

    # -- fitted state ----------------------------------------------------------------------
    def fitted_state(self) -> dict[str, torch.Tensor]:
        """Buffers fitted on data before training, by the name of the constructor argument
        that takes them (the gene positions are the model's, not listed here)."""
        state = self.state_dict()
        return {arg: state[key].detach().cpu().clone() for arg, key in self.fitted_buffers.items()}

    def fitted_state_keys(self) -> set[str]:
        """State-dict names of every fitted buffer, gene positions included: what a model
        built for other data sets itself and must not take from another model's weights."""
        return {"genes.gene_index", *self.fitted_buffers.values()}

    # -- the classifier head -----------------------------------------------------------------
    @property
    def has_head(self) -> bool:
        """Whether the module has a classifier head."""
        return self.n_labels is not None

    def add_head(self, n_labels: int) -> None:
        """Add a fresh classifier head for `n_labels` classes (replacing any).

        Models call it when built with labels; a model built without them (to pretrain) gets
        its head in the model that :meth:`~scattn.model.base.PretrainingMixin.from_pretrained`
        starts from it.
        """
        if n_labels < 2:
            raise ValueError(f"{type(self).__name__.removesuffix('Module')} needs at least two "
                             f"classes, got {n_labels}.")
        setattr(self, self.head_name, self._make_head(n_labels))
        self.n_labels = n_labels

    def head_parameter_names(self) -> list[str]:
        """State-dict names of the head's entries."""
        prefix = f"{self.head_name}."
        return [k for k in self.state_dict() if k.startswith(prefix)]

    def _make_head(self, n_labels: int) -> nn.Module:
        raise NotImplementedError

    def _require_head(self) -> None:
        if not self.has_head:
            raise ValueError(f"{type(self).__name__} has no classifier head; it was built without "
                             "labels.")

    # -- objectives --------------------------------------------------------------------------
    def classification_loss(self, tensors, inference_outputs, generative_outputs,
                            class_weights: torch.Tensor | None = None) -> LossOutput:
        """Cross-entropy over the labelled cells of the minibatch (each class weighted by
        `class_weights`, one per class, when given)."""
        self._require_head()
        return classification_loss(inference_outputs[MODULE_KEYS.LOGITS],
                                   tensors[REGISTRY_KEYS.LABELS_KEY], self.n_labels, weight=class_weights)

