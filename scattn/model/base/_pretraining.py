"""The pretraining mixin: self-supervised pretraining, and labelled models started from it."""

from __future__ import annotations

import logging
import os
import warnings

from anndata import AnnData

from scattn._docs import scattn_dsp
from scattn._quiet import user_stacklevel
from scattn.train import SETTINGS_BATCH_SIZE, MaskedPretrainingPlan, TrainDefaults

from ._fitted import Source, weights_fingerprint

logger = logging.getLogger(__name__)


class PretrainingMixin:
    """``pretrain`` (masked self-supervised training on any cells, labelled or not),
    ``is_pretrained_``, and ``Model.from_pretrained(model_or_dir, adata)``.

    A model using it sets ``_pretraining_plan_cls`` (default
    :class:`~scattn.train.MaskedPretrainingPlan`; its module implements that objective) and
    ``_pretrain_defaults`` (a :class:`~scattn.train.TrainDefaults`).
    """

    _pretraining_plan_cls = MaskedPretrainingPlan
    _pretrain_defaults = TrainDefaults(max_epochs=100, lr=1e-3, weight_decay=0.0,
                                       batch_size=SETTINGS_BATCH_SIZE, early_stopping_patience=10)
    #: whether :meth:`pretrain` has run (saved with the model)
    is_pretrained_: bool = False
    #: the pretraining history (``train_loss``, ``validation_loss``), like ``history``
    pretrain_history_: dict | None = None
    #: a fingerprint of the pretrained weights the model started from (:meth:`from_pretrained`,
    #: a published checkpoint) or that :meth:`pretrain` left; saved with the model, so that
    #: :func:`scattn.tl.attention_shift` can check a fine-tuned model against its pretrained one
    pretrained_from_: str | None = None

    @scattn_dsp.dedent
    def pretrain(
        self,
        adata: AnnData | None = None,
        *,
        max_epochs: int | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        batch_size: int | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        early_stopping: bool | None = None,
        early_stopping_patience: int | None = None,
        restore_best_weights: bool | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        precision: str | int | None = None,
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        min_gene_overlap: float = 0.5,
        **trainer_kwargs,
    ) -> None:
        """Self-supervised pretraining on any cells, labelled or not (the model's
        ``_pretraining_plan_cls`` objective); then :meth:`from_pretrained` or ``train()``.

        Parameters
        ----------
        adata
            Cells to pretrain on: `None` for the model's own AnnData, or another AnnData with
            the same kind of data, genes matched by name (missing genes read as zero, with a
            warning). Its labels are not read.
        %(train)s
        min_gene_overlap
            Smallest share of the model's genes that `adata` must have.

        Notes
        -----
        %(train_defaults)s

        The history is in ``model.pretrain_history_``; ``model.is_pretrained_`` becomes `True`.
        """
        args = self._args_of_call(self._pretrain_defaults, locals(), n_cells=self.adata.n_obs if adata is None else adata.n_obs)
        plan = {"lr": args.lr, "weight_decay": args.weight_decay, **(plan_kwargs or {})}
        self._pretrain(adata, plan_kwargs=plan, args=args, accelerator=accelerator, devices=devices,
                       min_gene_overlap=min_gene_overlap, datasplitter_kwargs=datasplitter_kwargs,
                       **trainer_kwargs)

    def _pretrain(
        self,
        adata: AnnData | None,
        *,
        plan_kwargs: dict,
        args,
        accelerator,
        devices,
        min_gene_overlap: float,
        datasplitter_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Run the pretraining plan with the resolved `args` (a :class:`~scattn.train.TrainArgs`)
        on `adata` (`None`: the model's own cells; another AnnData is aligned by gene name, its
        zero-filled genes never scored)."""
        plan = self._pretraining_plan_cls(self.module, **plan_kwargs)
        if self.is_trained_:
            warnings.warn(
                f"Pretraining a trained {type(self).__name__} changes the network under its "
                "classifier: train it again before predicting.", UserWarning, stacklevel=user_stacklevel(),
            )
        # the runner overwrites these; pretraining is not the model's training
        kept = {k: getattr(self, k, None) for k in
                ("history_", "train_indices", "validation_indices", "test_indices", "trainer",
                 "is_trained_")}
        panel = self.module.genes
        with self._aligned(adata, min_gene_overlap=min_gene_overlap) as internal:
            panel.set_unobserved(self._unobserved_model_genes(internal))
            self.is_trained_ = False  # a fresh history, not appended to the classifier's
            self.history_ = None
            try:
                epochs = self._run_training(plan, args, adata=internal, accelerator=accelerator,
                                            devices=devices, datasplitter_kwargs=datasplitter_kwargs,
                                            what="pretrain()", **trainer_kwargs)
                pretrain_history = self.history_
            finally:
                panel.set_unobserved(None)
                for k, v in kept.items():
                    setattr(self, k, v)
        self.module.eval()
        if epochs:
            self.pretrain_history_ = pretrain_history
            self.is_pretrained_ = True
            self.is_trained_ = False  # the classifier no longer matches the changed network
            self.pretrained_from_ = weights_fingerprint(self.module)

    @classmethod
    def from_pretrained(cls, model_or_dir, adata: AnnData, *, min_gene_overlap: float = 0.5,
                        prefix: str | None = None):
        """A model on `adata` that starts from a pretrained (or trained) one.

        Keeps the source's architecture, genes (found in `adata` by name; genes `adata` lacks
        read as zero, with a warning) and every weight; the classifier head is new, for
        `adata`'s classes (rows of classes the source already knew are copied). Then
        ``model.train()`` fine-tunes the whole network on `adata`'s labelled cells.

        Parameters
        ----------
        model_or_dir
            A pretrained model of this class, or a directory it was saved to
            (``model.save(dir)``; its AnnData is not needed).
        adata
            Registered with ``setup_anndata`` (usually with labels), with the same kind of
            data (counts or log-normalised) as the source.
        min_gene_overlap
            Smallest fraction of the source's genes `adata` must have.
        prefix
            File name prefix used when saving (with a directory).

        Returns
        -------
        The new model (not trained yet).
        """
        if isinstance(model_or_dir, cls):
            source = Source.from_model(model_or_dir)
        elif isinstance(model_or_dir, str | os.PathLike):
            source = Source.from_dir(os.fspath(model_or_dir), expected=cls.__name__, prefix=prefix)
        else:
            raise TypeError(f"model_or_dir must be a {cls.__name__} or a directory, got "
                            f"{type(model_or_dir).__name__}.")
        if not (source.pretrained or source.trained):
            raise ValueError(f"The source {cls.__name__} was neither pretrained nor trained.")
        manager = cls._get_most_recent_anndata_manager(adata) if isinstance(adata, AnnData) else None
        if manager is None:
            raise ValueError(f"Register adata first: `sa.model.{cls.__name__}.setup_anndata(adata, "
                             "labels_key=...)`.")
        cls._check_source(source, adata, setup_args=manager.registry["setup_args"],
                          min_gene_overlap=min_gene_overlap)
        model = cls._from_source(source, adata)
        model.is_pretrained_ = source.pretrained
        model.pretrained_from_ = weights_fingerprint(model.module, source.state_dict)
        model._model_summary_string += f"; started from a {'pretrained' if source.pretrained else 'trained'} {cls.__name__}"
        return model
