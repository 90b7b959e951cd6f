"""Names shared by modules, training plans and models: output keys and training objectives."""

from __future__ import annotations

from typing import NamedTuple


class _ModuleKeys(NamedTuple):
    LOGITS: str = "logits"
    """``(B, classes)`` class scores (classifier heads)."""
    Z: str = "z"
    """``(B, latent)`` the cell embedding (``get_latent_representation``)."""
    ATTENTION: str = "attention"
    """``(B, g)`` per-cell attribution over the model's genes (``get_attention``)."""
    FEATURE_ATTENTION: str = "feature_attention"
    """CFAN: ``(B, u, u)`` attention among a cell's features."""
    FEATURES: str = "features"
    """CFAN: ``(B, u, m)`` renewed features."""
    MASKS: str = "masks"
    """SIMS: ``(B, steps, g)`` sparsemax masks."""
    ENTROPY: str = "entropy"
    """SIMS: mean mask entropy (the sparsity regulariser)."""
    RECONSTRUCTION: str = "reconstruction"
    """Masked pretraining: the reconstruction of the inputs."""
    TARGET: str = "target"
    """Masked pretraining: the values to reconstruct."""
    HIDDEN: str = "hidden"
    """Masked pretraining: ``(B, g)`` 1 where an input was hidden and is scored."""
    EXPRESSION: str = "expression"
    """``(B, g)`` predicted expression of every model gene (scGPT's cell-level decoder)."""


class _Objectives(NamedTuple):
    CLASSIFICATION: str = "classification"
    """Cross-entropy over labelled cells (``module.classification_loss``)."""
    MASKED: str = "masked"
    """Reconstruct hidden inputs (``module.masked_loss``), labels never read."""
    GENERATIVE: str = "generative"
    """Likelihood of the observed data (``module.generative_loss``), e.g. an autoencoder."""
    MULTITASK: str = "multitask"
    """A weighted sum of a module's named tasks (``module.multitask_loss``), the weights chosen
    by the training plan (scGPT's GEP, GEPC, ECS, DAR, CLS)."""


#: keys of the dicts that modules' ``inference`` returns
MODULE_KEYS = _ModuleKeys()
#: training objectives; a training plan names one, the module's ``loss`` runs it
OBJECTIVES = _Objectives()

#: registry key of the cell-level condition (e.g. stimulation) that ``setup_anndata(condition_key=)``
#: registers
CONDITION_KEY = "condition"
