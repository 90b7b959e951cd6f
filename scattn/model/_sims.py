"""SIMS: Scalable, Interpretable Modeling for Single-cell (a TabNet classifier) as an scvi-tools model."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scattn._docs import scattn_dsp
from scattn.data import balanced_class_weights
from scattn.module import SIMSModule
from scattn.train import (
    Rule,
    StepBudget,
    TrainDefaults,
    n_training_processes,
    steps_per_epoch,
    training_cells,
)

from .base import FittedState, GenePanelClassifier, PretrainingMixin, Source

logger = logging.getLogger(__name__)


@scattn_dsp.dedent
class SIMS(PretrainingMixin, GenePanelClassifier):
    """SIMS: a TabNet classifier with sparse feature masks (Gala, SIMS thesis; Arik & Pfister 2021).

    TabNet's encoder reads the cell's log-normalised expression through ``n_steps`` decision
    steps; each step selects genes with a sparsemax mask chosen by an attentive transformer,
    and a linear layer classifies the sum of the steps' decision outputs. The loss weights
    cells inversely to their class frequency and adds the masks' entropy (sparsity).

    Parameters
    ----------
    %(model_adata)s
    n_top_genes
        Number of most variable genes to read; `None` (default): every registered gene, as
        SIMS does (the sparse masks do the gene selection).
    %(genes)s
    n_d, n_a
        Widths of each decision step's decision and attention outputs (SIMS: 8, 8).
    n_steps
        Number of decision steps (SIMS: 3).
    gamma
        Prior-scale relaxation: 1 lets each gene be used by one step only; larger values
        allow reuse (SIMS: 1.3).
    n_independent, n_shared
        Step-specific and shared GLU layers in each feature transformer (SIMS: 2, 2).
    virtual_batch_size
        Rows per ghost batch norm chunk (SIMS: 128).
    momentum
        Batch norm momentum (SIMS: 0.02).
    lambda_sparse
        Weight of the mask-entropy regulariser (SIMS: 1e-3).
    weighted_loss
        Weight the cross-entropy by inverse class frequency ``n / (C n_c)`` over the labelled
        cells (SIMS' default). `False`: every cell counts the same.
    %(fitted)s

    Notes
    -----
    * **Input**: raw counts (or log-normalised data declared with ``expression="log1p"``);
      the model normalises to 10,000 per cell and takes log1p itself, then TabNet's input
      batch norm scales each gene. No gene selection, scaling or batch correction is needed.
    * **Embedding** (``obsm["X_sims"]``): ``sum_i ReLU(d_i)``, the ``n_d``-dim decision output
      the classifier reads.
    * **Attribution** (``get_attention``, ``layers["sims_attention"]``): the explain matrix,
      ``sum_i M_i * sum_c ReLU(d_i)_c``: each step's sparsemax mask weighted by how much that
      step contributes to the decision, normalised to sum to 1 per cell. Exactly zero for
      genes no step selected.
    * **Feature importances** (:meth:`get_feature_importances`): the explain matrix summed
      over cells (global) and averaged per class (thesis Figures 0.11-0.14).
      :meth:`predict` writes them (``key = key_added``): ``adata.uns[key]["feature_importances"]``
      (DataFrame, genes x ``importance``: the sum over cells divided by its largest value,
      sorted) and ``adata.uns[key]["class_importances"]`` (DataFrame, genes x classes: the
      mean over the cells whose most probable class it is, also under an
      `unknown_threshold`, each gene divided by its largest value over classes), both in the
      same inference pass; genes the data lack are 0. Plots:
      :func:`scattn.pl.feature_importances`, :func:`scattn.pl.class_importances`.
    * **Pretraining** (:meth:`pretrain`): TabNet's masked self-supervised reconstruction on
      any cells (labelled or not, this dataset or another), before :meth:`train`. A SIMS set
      up without ``labels_key`` is an encoder to pretrain (no classifier head); save it, and
      start a classifier on labelled data with :meth:`from_pretrained`.

    Examples
    --------
    >>> import scattn as sa
    >>> sa.model.SIMS.setup_anndata(adata, labels_key="cell_type", layer="counts")
    >>> model = sa.model.SIMS(adata)
    >>> model.pretrain(max_epochs=50)  # optional, uses every cell
    >>> model.train()
    >>> model.predict()  # adata.obs["sims_prediction"], adata.uns["sims"]["feature_importances"], ...

    Pretrain on unlabelled cells, then fine-tune on labelled ones:

    >>> sa.model.SIMS.setup_anndata(unlabelled, layer="counts")
    >>> encoder = sa.model.SIMS(unlabelled)
    >>> encoder.pretrain()
    >>> encoder.save("sims_pretrained")
    >>> sa.model.SIMS.setup_anndata(labelled, labels_key="cell_type", layer="counts")
    >>> model = sa.model.SIMS.from_pretrained("sims_pretrained", labelled)
    >>> model.train()
    """

    _module_cls = SIMSModule
    _key = "sims"
    _labels = "optional"
    _inference_batch_factor = 8  # 1,024 cells a minibatch at the default batch size
    _train_defaults = TrainDefaults(
        max_epochs=500, lr=1e-2, weight_decay=1e-3, batch_size=Rule("256, halved to 8 minibatches"),
        early_stopping_patience=StepBudget(15, 300),
        extra={"gradient_clip_val": 0.5, "lr_factor": 0.75, "lr_patience": StepBudget(5, 100)})
    _pretrain_defaults = TrainDefaults(
        max_epochs=100, lr=1e-2, weight_decay=1e-3, batch_size=Rule("256, halved to 8 minibatches"),
        early_stopping_patience=10, extra={"mask_ratio": 0.2})
    _attention_description = (
        "TabNet explain matrix: sparsemax masks weighted by each step's decision output, "
        "normalised per cell"
    )

    def __init__(
        self,
        adata: AnnData,
        *,
        n_top_genes: int | None = None,
        genes: Sequence[str] | None = None,
        n_d: int = 8,
        n_a: int = 8,
        n_steps: int = 3,
        gamma: float = 1.3,
        n_independent: int = 2,
        n_shared: int = 2,
        virtual_batch_size: int = 128,
        momentum: float = 0.02,
        lambda_sparse: float = 1e-3,
        weighted_loss: bool = True,
        fitted: FittedState | None = None,
    ) -> None:
        super().__init__(adata)
        if fitted is None:
            fitted = self._panel_state(n_top_genes, genes)
        self._init_panel(fitted)
        self._weighted_loss = weighted_loss
        weights = fitted.buffers.get("class_weights")
        if weights is None or len(weights) != len(self.classes_):
            # a new model, or one started from another (weights from its own labels)
            weights = self._class_weights(weighted_loss)
        self.module = self._module_cls(
            **self._module_gene_args(fitted),
            n_d=n_d,
            n_a=n_a,
            n_steps=n_steps,
            gamma=gamma,
            n_independent=n_independent,
            n_shared=n_shared,
            virtual_batch_size=virtual_batch_size,
            momentum=momentum,
            lambda_sparse=lambda_sparse,
            class_weights=weights,
        )
        self._model_summary_string = (
            f"SIMS (TabNet): {len(self.var_names_)} genes, {len(self.classes_)} classes, n_d={n_d}, "
            f"n_a={n_a}, n_steps={n_steps}, gamma={gamma}, lambda_sparse={lambda_sparse}, "
            f"{'class-weighted' if weighted_loss else 'unweighted'} loss"
        )
        self._record_init_params(locals())

    def _class_weights(self, weighted: bool) -> torch.Tensor | None:
        """``n / (C n_c)`` over the labelled cells (classes without cells: 1); ones if not
        `weighted`; `None` without labels."""
        n_labels = len(self.classes_)
        if not n_labels:
            return None
        if not weighted:
            return torch.ones(n_labels)
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
        return torch.as_tensor(balanced_class_weights(codes, n_labels), dtype=torch.float32)

    # -- training ---------------------------------------------------------------------------
    @scattn_dsp.dedent
    def train(
        self,
        max_epochs: int | None = None,
        *,
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
        gradient_clip_val: float | None = 0.5,
        lr_factor: float = 0.75,
        lr_patience: int | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train the classifier (from the pretrained encoder if :meth:`pretrain` ran).

        SIMS' recipe (thesis section 0.3.2): Adam, learning rate 0.01, weight decay 1e-3,
        gradient clipping, the learning rate times 0.75 when the validation loss plateaus,
        early stopping on the validation loss.

        Parameters
        ----------
        %(train)s
        gradient_clip_val
            Clip the gradient norm to this value; `None`: no clipping.
        lr_factor, lr_patience
            Multiply the learning rate by `lr_factor` after `lr_patience` epochs without a
            better validation loss (only with a validation set). `None`: 5 epochs, or as many
            as make 100 optimiser steps when epochs are shorter (see Notes).

        Notes
        -----
        %(train_defaults)s

        The default batch size is 256 (two ghost batches of 128), halved (down to 32) until an
        epoch has at least 8 minibatches. The thesis' scheduler patience (20 epochs) exceeds its
        early-stopping patience (4), so its scheduler could never act; here the learning rate
        drops after `lr_patience` = 5 epochs and training stops after 15. The validation loss
        rather than the validation accuracy decides, as in the SIMS code: on small validation
        sets accuracy moves in coarse steps and ties stop training too early.

        Patience is really a number of optimiser steps: on a few hundred cells an epoch is 3-5
        minibatches, and 15 epochs (about 60 steps at learning rate 0.01, with batch-norm
        statistics still far from the data) stopped training before anything was learned
        (macro F1 0.04-0.16 on 120-150 training cells, see
        ``benchmarks/studies/small_defaults.py``). By default the patiences are therefore
        ``max(15, ceil(300 / s))`` and ``max(5, ceil(100 / s))`` epochs for ``s`` minibatches
        per epoch: unchanged from about 20 minibatches per epoch (5,000 cells) up.
        """
        self._require_classifier()
        self._check_own_data()
        self._require_labelled_cells()
        run_kwargs = {"accelerator": accelerator, "devices": devices, **trainer_kwargs}
        call = locals()
        with self._training_cells() as data:
            n_cells = (self.adata if data is None else data).n_obs
            args = self._args_of_call(self._train_defaults, call, n_cells=n_cells,
                                      batch_size_rule=self._batch_size_rule, drop_last=self._drop_last_rule(n_cells))
            if args.batch_size < 2:
                raise ValueError(f"batch_size must be >= 2 (batch norm needs two cells), got {args.batch_size}.")
            procs = n_training_processes(run_kwargs)
            if lr_patience is None:
                steps = self._steps_per_epoch(n_cells, args.train_size, args.validation_size,
                                              args.batch_size, procs)
                lr_patience = StepBudget(5, 100).resolve(steps)
            plan = {"lr": args.lr, "eps": 1e-8, "weight_decay": args.weight_decay}
            if data is not None and self._weighted_loss:  # the cells trained on are not the model's own
                plan["class_weights"] = self._balanced_class_weights(data)
            if args.has_validation:
                plan.update(reduce_lr_on_plateau=True, lr_factor=lr_factor, lr_patience=lr_patience,
                            lr_scheduler_metric="validation_loss", lr_threshold=0.0)
            plan.update(plan_kwargs or {})
            splitter = {"drop_last": self._drop_last(n_cells, args.train_size, args.validation_size,
                                                     args.batch_size, procs)}
            splitter.update(datasplitter_kwargs or {})
            if gradient_clip_val is not None:
                trainer_kwargs.setdefault("gradient_clip_val", gradient_clip_val)
            self._run_training(self._training_plan_cls(self.module, **plan), args, adata=data,
                               accelerator=accelerator, devices=devices, datasplitter_kwargs=splitter,
                               **trainer_kwargs)

    @classmethod
    def _batch_size_rule(cls, n_cells: int, args, n_processes: int) -> int:
        """SIMS' default batch size for `args`' split of `n_cells` cells (see :meth:`train`)."""
        return cls._batch_size_for(n_cells, args.train_size, args.validation_size, None, n_processes)

    @classmethod
    def _drop_last_rule(cls, n_cells: int):
        """Whether a run on `n_cells` cells drops a last one-cell minibatch, as the budget
        rule of :meth:`~scattn.train.TrainingRunnerMixin._training_args` asks it."""
        return lambda args, procs: cls._drop_last(n_cells, args.train_size, args.validation_size,
                                                  args.batch_size, procs)

    @classmethod
    def _batch_size_for(cls, n_obs: int, train_size: float, validation_size: float | None,
                        batch_size: int | None = None, n_processes: int = 1) -> int:
        """`batch_size` (at least 2: batch norm), or 256 (SIMS) lowered by powers of two (to 32)
        until an epoch has >= 8 minibatches (in each of `n_processes` DDP processes)."""
        if batch_size is None:
            n_train = cls._cells_per_process(n_obs, train_size, validation_size, n_processes)
            batch_size = default_batch_size(n_train, 256)
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm needs two cells), got {batch_size}.")
        return batch_size

    @classmethod
    def _steps_per_epoch(cls, n_obs: int, train_size: float, validation_size: float | None,
                         batch_size: int, n_processes: int = 1) -> int:
        """Optimiser steps in one training epoch (of each of `n_processes` DDP processes, which
        share every epoch's cells)."""
        drop = cls._drop_last(n_obs, train_size, validation_size, batch_size, n_processes)
        return steps_per_epoch(n_obs, train_size, validation_size, batch_size, n_processes=n_processes,
                               drop_last=drop)

    @classmethod
    def _drop_last(cls, n_obs: int, train_size: float, validation_size: float | None, batch_size: int,
                   n_processes: int = 1) -> bool:
        """Drop a last training minibatch of a single cell (batch norm cannot train on one); under
        DDP each of `n_processes` processes batches its own share of the cells."""
        n_train = cls._cells_per_process(n_obs, train_size, validation_size, n_processes)
        return n_train % batch_size == 1 and n_train > batch_size

    @staticmethod
    def _cells_per_process(n_obs: int, train_size: float, validation_size: float | None,
                           n_processes: int = 1) -> int:
        """Training cells in an epoch of each of `n_processes` processes (DDP shares them out)."""
        return math.ceil(training_cells(n_obs, train_size, validation_size) / n_processes)

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
        mask_ratio: float = 0.2,
        **trainer_kwargs,
    ) -> None:
        """Self-supervised pretraining of the encoder: reconstruct randomly hidden genes.

        Every cell is used, labelled or not; :meth:`train` then fine-tunes the whole network
        from the pretrained encoder. The history is in ``model.pretrain_history_``
        (``train_loss``, ``validation_loss``: the variance-normalised reconstruction error)
        and ``model.is_pretrained_`` becomes `True`. Genes zero-filled because `adata` lacks
        them are never scored.

        Parameters
        ----------
        adata
            Cells to pretrain on: `None` for the model's own AnnData, or another AnnData with
            the same kind of data (same layer, counts or log-normalised), genes matched by name
            (missing genes read as zero, with a warning). Its labels are not read.
        %(train)s
        min_gene_overlap
            Smallest share of the model's genes that `adata` must have.
        mask_ratio
            Probability that a gene of a cell is hidden (TabNet: 0.2).

        Notes
        -----
        %(train_defaults)s
        """
        n_obs = self.adata.n_obs if adata is None else adata.n_obs
        run_kwargs = {"accelerator": accelerator, "devices": devices, **trainer_kwargs}
        args = self._args_of_call(self._pretrain_defaults, locals(), n_cells=n_obs,
                                  batch_size_rule=self._batch_size_rule, drop_last=self._drop_last_rule(n_obs))
        if args.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm needs two cells), got {args.batch_size}.")
        procs = n_training_processes(run_kwargs)
        splitter = {"drop_last": self._drop_last(n_obs, args.train_size, args.validation_size,
                                                 args.batch_size, procs)}
        splitter.update(datasplitter_kwargs or {})
        plan = {"mask_ratio": mask_ratio, "lr": args.lr, "weight_decay": args.weight_decay, "eps": 1e-8}
        plan.update(plan_kwargs or {})
        self._pretrain(adata, plan_kwargs=plan, args=args, accelerator=accelerator, devices=devices,
                       min_gene_overlap=min_gene_overlap, datasplitter_kwargs=splitter, **trainer_kwargs)

    # -- feature importances ----------------------------------------------------------------
    def get_feature_importances(
        self,
        adata: AnnData | None = None,
        indices=None,
        *,
        groupby: str | Sequence | None = None,
        batch_size: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Global and per-class feature importances from the explain matrix (thesis 0.3.3).

        Parameters
        ----------
        adata
            AnnData (aligned by gene name); `None` for the training data.
        indices
            Cells to use.
        groupby
            The class of each cell: a column of ``adata.obs`` or one label per cell (of the
            cells used); cells with a missing label count only in the global importance.
            `None`: the model's most probable class.
        batch_size
            Minibatch size.

        Returns
        -------
        ``(global, per_class)``, as :meth:`predict` writes them: a DataFrame, genes x
        ``importance``, the explain matrix summed over cells divided by its largest value
        (sorted, largest first); a DataFrame genes x classes, the explain matrix averaged
        over each class's cells, each gene divided by its largest value over classes. Genes
        `adata` lacks get 0.
        """
        self._check_usable()
        target = self.adata if adata is None else adata
        classes, codes = self.classes_, None
        if groupby is not None:
            groups = target.obs[groupby] if isinstance(groupby, str) else pd.Series(list(groupby))
            if isinstance(groupby, str) and indices is not None:
                groups = groups.iloc[np.asarray(indices)]
            n_cells = target.n_obs if indices is None else len(np.asarray(indices))
            if len(groups) != n_cells:
                raise ValueError(f"groupby has {len(groups)} entries for {n_cells} cells.")
            codes, uniques = pd.factorize(groups.astype(object).where(groups.notna(), None).astype("string"),
                                          sort=True)
            classes = [str(c) for c in uniques]
        summary = ExplainSummary(classes, self.var_names_, codes=codes)
        self._infer(adata, indices=indices, batch_size=batch_size, keys=(), accumulate=summary,
                    desc="SIMS.get_feature_importances")
        res = summary.results(self._readable_in(target.var_names))
        return res["feature_importances"], res["class_importances"]

    def _attention_summary(self) -> ExplainSummary:
        """Feature importances over the most probable class, summed while `predict` runs."""
        return ExplainSummary(self.classes_, self.var_names_)

    # -- transfer ---------------------------------------------------------------------------
    @classmethod
    def _transfer_buffers(cls, source: Source, adata: AnnData, gene_index: np.ndarray) -> dict:
        """None: a model started from another weights classes by its own labels."""
        return {}


def default_batch_size(n_train: int, largest: int = 256, smallest: int = 32, min_batches: int = 8) -> int:
    """`largest`, halved until `n_train` cells make `min_batches` minibatches (not below `smallest`)."""
    size = largest
    while size > smallest and n_train < min_batches * size:
        size //= 2
    return size


class ExplainSummary:
    """The explain matrix summed over cells and per class, one inference minibatch at a time.

    Called with each minibatch's inference output (``attention``, ``logits``); a cell's class
    is its code in `codes` (in the order cells arrive; -1: no class) or, without codes, its
    most probable class. :meth:`results` turns the sums into the importances.
    """

    def __init__(self, classes: Sequence[str], genes: Sequence[str], codes: np.ndarray | None = None) -> None:
        self.classes = [str(c) for c in classes]
        self.genes = pd.Index(genes)
        self.codes = None if codes is None else np.asarray(codes)
        self._seen = 0
        self.sums = np.zeros((len(self.classes), len(self.genes)))
        self.total = np.zeros(len(self.genes))
        self.counts = np.zeros(len(self.classes))

    def __call__(self, out: dict) -> None:
        att = out["attention"].detach().float().cpu().numpy().astype(np.float64)
        if self.codes is None:
            codes = out["logits"].argmax(-1).cpu().numpy()
        else:
            codes = self.codes[self._seen : self._seen + len(att)]
        self._seen += len(att)
        self.total += att.sum(0)
        for c in np.unique(codes[codes >= 0]):
            self.sums[c] += att[codes == c].sum(0)
            self.counts[c] += int((codes == c).sum())

    def results(self, readable: np.ndarray | None = None) -> dict[str, pd.DataFrame]:
        """``feature_importances`` (genes x ``importance``) and ``class_importances`` (genes x
        classes with cells); genes not `readable` (absent from the data) are 0."""
        total, sums = self.total.copy(), self.sums.copy()
        if readable is not None:
            total[~readable] = 0
            sums[:, ~readable] = 0
        top = total.max() if total.size and total.max() > 0 else 1.0
        global_imp = pd.DataFrame({"importance": (total / top).astype(np.float32)}, index=self.genes)
        global_imp = global_imp.sort_values("importance", ascending=False, kind="stable")
        present = self.counts > 0
        means = sums[present] / self.counts[present, None]
        col_max = means.max(0) if len(means) else np.zeros(len(self.genes))
        means = np.divide(means, col_max, out=np.zeros_like(means), where=col_max > 0)
        per_class = pd.DataFrame(means.T.astype(np.float32), index=self.genes,
                                 columns=pd.Index(np.asarray(self.classes, dtype=object)[present], dtype=str))
        return {"feature_importances": global_imp, "class_importances": per_class}
