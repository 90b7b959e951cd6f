"""Saving and loading a scattn model: atomic saves, loads that refit nothing."""

from __future__ import annotations

import logging
import os

import pandas as pd
from anndata import AnnData, read_h5ad

from scattn._compat import parse_device_args
from scattn.data import check_labels, labelled_mask

from ._data import covariate_keys
from ._fitted import FITTED_ATTR, FittedState, read_checkpoint
from ._setup import validate_setup

logger = logging.getLogger(__name__)


class PersistenceMixin:
    """``save`` (written into a temporary folder and moved in, the model file last) and
    ``load`` (the fitted state through the constructor). Part of
    :class:`~scattn.model.base.ScattnModel`."""

    @staticmethod
    def _validate_for_load(adata: AnnData, args: dict, classes: list[str]) -> None:
        """The checks of `setup_anndata` for an AnnData a saved model is loaded with.

        Its labels may be missing or all unlabelled (to predict), but a label the model does
        not know is an error, not silently "unlabelled".
        """
        labels_key = args.get("labels_key")
        unlabeled = args.get("unlabeled_category", "Unknown")
        validate_setup(adata, None, args.get("layer"), args.get("expression", "counts"), unlabeled,
                       obs_keys=covariate_keys(args))
        if labels_key is not None and labels_key in adata.obs:
            labels = adata.obs[labels_key]
            if labelled_mask(labels, unlabeled).any():
                check_labels(labels, unlabeled, labels_key=labels_key, classes=classes)

    def save(self, dir_path: str, prefix: str | None = None, overwrite: bool = False,
             save_anndata: bool = False, **kwargs) -> None:
        """Save the model (and with `save_anndata` its AnnData) into `dir_path`.

        Files are written into a temporary folder beside `dir_path` and moved in when complete,
        the model file last: a crash while saving leaves the previous save (or nothing) in
        place, never a half-written model that :meth:`load` would read.

        Parameters
        ----------
        dir_path
            Directory to write (created if missing).
        prefix
            Prefix of the file names.
        overwrite
            Replace a model saved there before. Without it, an existing `dir_path` is an error.
        save_anndata
            Also write the AnnData (``adata.h5ad``), so that ``load(dir_path)`` needs none.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save`.
        """
        import shutil
        import tempfile

        dir_path = os.fspath(dir_path)
        if os.path.exists(dir_path) and not os.path.isdir(dir_path):
            raise ValueError(f"{dir_path!r} is a file, not a directory; save into a directory.")
        if os.path.isdir(dir_path) and not overwrite:
            raise ValueError(f"{dir_path!r} already exists; pass `overwrite=True` to replace the "
                             "model saved there, or choose another directory.")
        parent = os.path.dirname(os.path.abspath(dir_path))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dir_path)}.saving-", dir=parent)
        try:
            super().save(tmp, prefix=prefix, overwrite=True, save_anndata=save_anndata, **kwargs)
            os.makedirs(dir_path, exist_ok=True)
            model_file = f"{prefix or ''}model.pt"
            # never an old model beside new data, nor an old AnnData beside a new model
            for name in (model_file, f"{prefix or ''}adata.h5ad"):
                if os.path.exists(os.path.join(dir_path, name)):
                    os.remove(os.path.join(dir_path, name))
            for name in sorted(os.listdir(tmp), key=lambda n: n == model_file):
                os.replace(os.path.join(tmp, name), os.path.join(dir_path, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, *, accelerator: str = "auto",
             device: int | str = "auto", prefix: str | None = None):
        """Load a model saved with ``model.save(dir_path)``.

        `adata` must have the genes the model was set up with, in the same order (the
        training AnnData, or one with the same ``var_names``); to predict on other data, call
        ``model.predict(other)`` on the loaded model, which aligns genes by name. Without
        `adata`, the model must have been saved with ``save_anndata=True``. Nothing is refitted:
        genes (and embeddings, groups, class weights) come from the saved model and reach it
        through its constructor (``fitted=``).

        Parameters
        ----------
        dir_path
            Directory written by ``model.save``.
        adata
            The AnnData to attach (see above); registered like the saved model's.
        accelerator, device
            Where to put the model (scvi-tools' arguments).
        prefix
            File name prefix used when saving.
        """
        prefix = prefix or ""
        saved = read_checkpoint(os.path.join(dir_path, f"{prefix}model.pt"), expected=cls.__name__)
        source = pd.Index(saved["var_names"])
        if adata is None:
            adata_path = os.path.join(dir_path, f"{prefix}adata.h5ad")
            if not os.path.exists(adata_path):
                raise ValueError(
                    f"{dir_path!r} holds no AnnData: pass `adata=` (the training data), or save "
                    "the model with `model.save(dir, save_anndata=True)`."
                )
            adata = read_h5ad(adata_path)
        if not source.equals(adata.var_names):
            shared = int(source.isin(adata.var_names).sum())
            order = ", in another order" if shared == len(source) == adata.n_vars else ""
            raise ValueError(
                f"adata's genes differ from the {len(source)} the model was set up with "
                f"({shared} shared{order}). Load with the training AnnData (or save with "
                "`save_anndata=True` and load without adata), then `model.predict(other_adata)`, "
                "which aligns genes by name."
            )
        attrs = dict(saved["attr_dict"])
        registry = attrs.pop("registry_")
        fitted = FittedState.from_dict(attrs.pop(FITTED_ATTR))
        init = attrs.pop("init_params_")
        cls._validate_for_load(adata, registry["setup_args"], attrs.get("classes_") or [])
        cls._register(adata, source_registry=registry, **registry["setup_args"])
        model = cls(adata, **init["non_kwargs"], **init["kwargs"], fitted=fitted)
        for attr, val in attrs.items():
            setattr(model, attr, val)
        state = dict(saved["model_state_dict"])
        model.module.on_load(model, pyro_param_store=state.pop("pyro_param_store", None))
        model.module.load_state_dict(state)
        _, _, torch_device = parse_device_args(accelerator=accelerator, devices=device,
                                               return_device="torch", validate_single_device=True)
        model.to_device(torch_device)
        model.module.eval()
        return model
