"""Fitted state, and the trained (or pretrained) model another model starts from."""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from scattn._quiet import user_stacklevel

#: the model attribute saved with every model (scvi-tools saves attributes ending in "_")
FITTED_ATTR = "fitted_state_"


@dataclass
class FittedState:
    """What a model fits on its AnnData before training, handed to its constructor.

    A new model computes it from the data; ``load``, ``load_query_data`` and
    ``from_pretrained`` give the saved or transferred one instead (``Model(adata, ...,
    fitted=state)``), so nothing is refitted.

    Attributes
    ----------
    var_names
        The model's genes, in its order.
    gene_index
        Position of each model gene among the registered genes (the registered gene count
        marks a gene absent from the data, read as zero).
    buffers
        The module's fitted buffers by constructor argument (CGRAN: embeddings and gene groups;
        SIMS: class weights), see :meth:`scattn.module.PanelModule.fitted_state`.
    """

    var_names: list[str]
    gene_index: np.ndarray
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain types, saved with the model."""
        return {"var_names": list(self.var_names), "gene_index": np.asarray(self.gene_index),
                "buffers": {k: v.detach().cpu() for k, v in self.buffers.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> FittedState:
        """Inverse of :meth:`to_dict`."""
        return cls([str(g) for g in d["var_names"]], np.asarray(d["gene_index"]),
                   {k: torch.as_tensor(v) for k, v in d["buffers"].items()})


def read_checkpoint(path: str, *, expected: str) -> dict:
    """``torch.load`` a saved model file with errors that name the file and what to do."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved model at {path}.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable scattn model ({type(err).__name__}: {err}); it may be "
            f"truncated or written by another program. Save the {expected} again with "
            "`model.save(dir, overwrite=True)`."
        ) from err
    attrs = saved.get("attr_dict") if isinstance(saved, dict) else None
    if not isinstance(attrs, dict) or "var_names" not in saved or "model_state_dict" not in saved:
        raise ValueError(f"{path} is not a scattn model file (it lacks the saved model's "
                         f"weights, genes or attributes); save the {expected} again with "
                         "`model.save(dir, overwrite=True)`.")
    name = attrs.get("registry_", {}).get("model_name")
    if name is not None and name != expected:
        raise ValueError(
            f"{os.path.dirname(path)!r} holds a saved {name} model, not a {expected}; load it "
            f"with `sa.model.{name}.load(...)`."
        )
    if FITTED_ATTR not in attrs:
        raise ValueError(
            f"{path} was saved by an earlier scattn without its fitted state; retrain the model "
            "with this version."
        )
    return saved


@dataclass
class Source:
    """A trained or pretrained model, live or saved, that a new model starts from.

    Attributes
    ----------
    model_name
        Class name.
    init_params
        The constructor's architecture arguments.
    fitted
        Its fitted state (genes, module buffers).
    state_dict
        Module weights.
    setup_args
        Its ``setup_anndata`` arguments (layer, kind of data, labels column...).
    classes
        Its classes, in head order (empty without a head).
    trained, pretrained
        Whether it was trained (classifier) or pretrained.
    """

    model_name: str
    init_params: dict
    fitted: FittedState
    state_dict: dict[str, torch.Tensor]
    setup_args: dict
    classes: list[str]
    trained: bool
    pretrained: bool

    @property
    def var_names(self) -> pd.Index:
        """The source model's genes."""
        return pd.Index(self.fitted.var_names)

    @classmethod
    def from_model(cls, model) -> Source:
        """From a live model."""
        params = {**model.init_params_["non_kwargs"], **model.init_params_["kwargs"]}
        return cls(
            type(model).__name__, params, model._fitted_state(),
            {k: v.detach().cpu() for k, v in model.module.state_dict().items()},
            dict(model._setup_args), list(getattr(model, "classes_", [])),
            bool(model.is_trained_), bool(getattr(model, "is_pretrained_", False)),
        )

    @classmethod
    def from_dir(cls, dir_path: str, *, expected: str, prefix: str | None = None) -> Source:
        """From a directory written by ``model.save``, without its AnnData."""
        saved = read_checkpoint(os.path.join(dir_path, f"{prefix or ''}model.pt"), expected=expected)
        attrs = saved["attr_dict"]
        params = {**attrs["init_params_"]["non_kwargs"], **attrs["init_params_"]["kwargs"]}
        registry = attrs["registry_"]
        return cls(
            expected, params, FittedState.from_dict(attrs[FITTED_ATTR]),
            {k: v for k, v in saved["model_state_dict"].items() if k != "pyro_param_store"},
            dict(registry["setup_args"]), list(attrs.get("classes_", [])),
            bool(attrs.get("is_trained_", False)), bool(attrs.get("is_pretrained_", False)),
        )


def check_shared_genes(genes: pd.Index, var_names: pd.Index, *, min_overlap: float, source: str,
                       target: str) -> None:
    """Errors for too few of a source model's `genes` in `var_names`; a warning for some missing."""
    if not 0 < min_overlap <= 1:
        raise ValueError(f"min_gene_overlap must be in (0, 1], got {min_overlap}.")
    n_shared = int(genes.isin(var_names).sum())
    if n_shared == 0:
        raise ValueError(
            f"The {target} shares no gene with the {source}'s {len(genes)} genes (e.g. "
            f"{', '.join(map(str, genes[:3]))}); check that both use the same gene identifiers "
            "(symbols vs Ensembl IDs)."
        )
    if n_shared < min_overlap * len(genes):
        raise ValueError(f"The {target} has {n_shared} of the {source}'s {len(genes)} genes, under "
                         f"min_gene_overlap={min_overlap}.")
    if n_shared < len(genes):
        warnings.warn(f"{len(genes) - n_shared} of the {source}'s {len(genes)} genes are missing "
                      f"from the {target}; they read as zero.", UserWarning, stacklevel=user_stacklevel())


#: parameters of heads a model may replace when another starts from it (not part of its lineage)
_HEAD_PREFIXES = ("classifier.", "batch_discriminator.")


def weights_fingerprint(module: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> str:
    """A SHA-256 of the weights a model passes on to models started from it, e.g. to tell
    whether a fine-tuned model started from a given pretrained one.

    Hashes names, dtypes, shapes and values of `state` (default: `module`'s own state dict)
    less what depends on the data rather than on training: `module`'s buffers (gene positions,
    medians of the data's genes) and the heads a new model replaces (classifier, batch
    discriminator). So one checkpoint loaded onto two AnnData gives one fingerprint.
    """
    state = module.state_dict() if state is None else state
    buffers = {name for name, _ in module.named_buffers()}
    digest = hashlib.sha256()
    for key in sorted(k for k in state if k not in buffers and not k.startswith(_HEAD_PREFIXES)):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
