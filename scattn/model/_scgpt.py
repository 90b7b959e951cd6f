"""scGPT-style transformer as an scvi-tools model: gene tokens with binned values and condition
tokens, generative pretraining, annotation, integration, response prediction, gene programs."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scattn._docs import scattn_dsp
from scattn._write import write_results
from scattn.module import CONDITION_KEY, MODULE_KEYS, SCGPTModule
from scattn.train import MultiTaskPlan, StepBudget, TrainDefaults

from .base import (
    AttentionMixin,
    ClassifierMixin,
    EmbeddingResult,
    FittedState,
    LatentMixin,
    PredictionResult,
    PretrainingMixin,
    QueryMixin,
    ScattnModel,
    VocabularyMixin,
)

logger = logging.getLogger(__name__)

#: scGPT's special tokens (its vocabulary has no <mask>: masked tokens get the value -1)
SCGPT_SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")

#: named architectures: ``"cpu"`` (the default, sized for a laptop) and ``"scgpt"`` (the
#: released whole-human model's shape)
PRESETS: dict[str, dict] = {
    "cpu": dict(n_layers=4, d_model=128, n_heads=4, d_ff=128, max_length=256, dropout=0.0),
    "scgpt": dict(n_layers=12, d_model=512, n_heads=8, d_ff=512, max_length=1200, dropout=0.2),
}

#: default weight of each task when it is on (scGPT's integration tutorial weighs ECS by 10)
TASK_WEIGHTS = {"gep": 1.0, "gepc": 1.0, "ecs": 10.0, "dar": 1.0, "cls": 1.0}


@scattn_dsp.dedent
class SCGPT(VocabularyMixin, PretrainingMixin, QueryMixin, AttentionMixin, LatentMixin, ClassifierMixin,
            ScattnModel):
    """scGPT-style transformer (Cui et al. 2024): each cell's expressed genes as tokens with
    their binned values, a ``<cls>`` token for the cell, condition tokens.

    A token's input is the sum of its gene's embedding, the embedding of its value's
    per-cell quantile bin (51 bins; 0 for not expressed) and, with ``condition_key``, the
    cell's condition embedding; no positions (a cell is a set of genes). The cell embedding is
    ``<cls>``'s last state. :meth:`pretrain` is generative pretraining (GEP and GEPC under the
    generative attention mask, mask ratio drawn from 0.25, 0.5, 0.75); :meth:`train`
    fine-tunes for annotation (CLS) when labels are registered, else for integration (GEP,
    GEPC, ECS, and DAR with batches); :meth:`predict_response` predicts cells under another
    condition. Every task is switchable (``tasks=``, ``weights=``).

    Parameters
    ----------
    %(model_adata)s
    preset
        Architecture: ``"cpu"`` (default; 4 layers, width 128, 4 heads, feed-forward 128, 256
        tokens, no dropout: about 10,000 tokens/s per CPU core in training) or ``"scgpt"`` (the released whole-human model's shape: 12 layers,
        width 512, 8 heads, feed-forward 512, 1,200 tokens, dropout 0.2). The arguments below
        override it.
    n_layers, d_model, n_heads, d_ff
        Transformer depth, width, heads and feed-forward width.
    max_length
        Tokens per cell at most, ``<cls>`` included: a cell expressing more genes gives its
        most expressed ones (see `sample_tokens`).
    dropout
        Dropout in the transformer and on the value embedding (scGPT: 0.2).
    n_bins
        Value bins, bin 0 included (scGPT: 51).
    ecs_threshold
        ECS's similarity threshold ``beta`` (scGPT: 0.8).
    n_cls_layers
        Linear layers of the cell-type head (scGPT: 3).
    cls_value
        Value input of the ``<cls>`` token (scGPT's fine-tuning tutorials: 0; its pretraining
        and ``embed_data``: -2, the pad value).
    pooling
        Cell embedding (what the cell-type head, ECS and ``obsm["X_scgpt"]`` read): ``"cls"``
        the ``<cls>`` token's last state (scGPT's ``cell_emb_style="cls"``), or ``"mean"`` the
        mean of the gene tokens' last states (its ``"avg-pool"``; Geneformer's
        ``pooling="mean"``).
    sample_tokens
        Train on a random subset of the expressed genes of a cell expressing more than
        ``max_length - 1`` (scGPT's recipe, made for ~1,200 highly variable genes) instead of
        its most expressed ones, which inference reads. Off by default: on all genes of a
        small set the two disagree, and the classifier learnt on random subsets predicted at
        chance on the most expressed ones (``docs/models/scgpt.md``).
    special_tokens
        Special tokens of the vocabulary (ids first, genes after); needs ``<pad>`` and ``<cls>``.
    %(fitted)s

    Notes
    -----
    * **Vocabulary**: the registered genes (``var_names`` or the ``gene_id_key`` column; scGPT
      uses gene symbols), saved with the model. New data are matched by ID; genes outside the
      vocabulary are dropped with a warning. scGPT fine-tunes on ~1,200 highly variable genes:
      subset `adata` to them before set-up.
    * **Values**: raw counts or log-normalised values give the same bins (per-cell ranks); the
      expression decoders predict log-normalised expression (``log1p`` of counts scaled to
      10,000 over the model's genes), which :meth:`predict_response` returns.
    * **Embedding** (``obsm["X_scgpt"]``): the pooled last state (``pooling``).
    * **Attribution** (``layers["scgpt_attention"]``): the attention each gene token receives
      in the last layer from ``<cls>`` (``pooling="cls"``) or averaged over every token
      (``"mean"``), averaged over heads; genes not among a cell's tokens get 0.
    * **Gene programs and networks**: :meth:`get_gene_embeddings` (for
      :func:`scattn.tl.gene_programs`) and :meth:`get_gene_attention` (for
      :func:`scattn.tl.gene_network`).

    Examples
    --------
    >>> import scattn as sa
    >>> sa.model.SCGPT.setup_anndata(adata, batch_key="batch")
    >>> model = sa.model.SCGPT(adata)
    >>> model.pretrain()  # generative pretraining
    >>> model.train()  # integration: GEP + GEPC + ECS + DAR
    >>> adata.obsm["X_scgpt"] = model.get_latent_representation()
    """

    _module_cls = SCGPTModule
    _key = "scgpt"
    _labels = "optional"
    _batch_key = True
    _condition_key = True
    _known_levels_only = ("batch_key", "condition_key")
    _pretraining_plan_cls = MultiTaskPlan
    _train_defaults = TrainDefaults(
        max_epochs=StepBudget(30, 300), lr=1e-3, weight_decay=1e-4, batch_size=32,
        early_stopping_patience=StepBudget(5, 100), extra={"mask_ratio": 0.4, "warmup_fraction": 0.1})
    _pretrain_defaults = TrainDefaults(
        max_epochs=10, lr=1e-3, weight_decay=1e-4, batch_size=32, train_size=0.95,
        early_stopping=False, early_stopping_patience=3,
        extra={"mask_ratio": "(0.25, 0.5, 0.75)", "generative": True, "warmup_fraction": 0.05})
    _attention_description = "attention the gene tokens receive from <cls>, last layer, mean over heads"

    @classmethod
    @scattn_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str | None = None,
        *,
        layer: str | None = None,
        expression: Literal["counts", "log1p"] = "counts",
        unlabeled_category: str = "Unknown",
        classes: Sequence[str] | None = None,
        gene_id_key: str | None = None,
        batch_key: str | None = None,
        condition_key: str | None = None,
    ) -> None:
        """Register `adata` with scGPT (labels optional: pretraining and integration read none).

        Parameters
        ----------
        %(setup_core)s
        %(setup_gene_id_key)s
        %(setup_batch_key)s
            Given to the expression decoders (never to the encoder) and, with two or more
            batches, to the adversarial batch discriminator (integration).
        %(setup_condition_key)s

        Notes
        -----
        %(setup_notes)s
        """
        cls._register(adata, labels_key, layer=layer, expression=expression,
                      unlabeled_category=unlabeled_category, classes=classes, gene_id_key=gene_id_key,
                      batch_key=batch_key, condition_key=condition_key)

    def __init__(
        self,
        adata: AnnData,
        *,
        preset: Literal["cpu", "scgpt"] = "cpu",
        n_layers: int | None = None,
        d_model: int | None = None,
        n_heads: int | None = None,
        d_ff: int | None = None,
        max_length: int | None = None,
        dropout: float | None = None,
        n_bins: int = 51,
        ecs_threshold: float = 0.8,
        n_cls_layers: int = 3,
        cls_value: float = 0.0,
        pooling: Literal["cls", "mean"] = "cls",
        sample_tokens: bool = False,
        special_tokens: Sequence[str] = SCGPT_SPECIAL_TOKENS,
        fitted: FittedState | None = None,
    ) -> None:
        super().__init__(adata)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
        arch = dict(PRESETS[preset])
        given = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                     max_length=max_length, dropout=dropout)
        arch.update({k: v for k, v in given.items() if v is not None})
        if arch["max_length"] < 2:
            raise ValueError(f"max_length must be >= 2, got {arch['max_length']}.")
        if not 0 <= arch["dropout"] < 1:
            raise ValueError(f"dropout must be in [0, 1), got {arch['dropout']}.")
        if n_bins < 3:
            raise ValueError(f"n_bins must be >= 3, got {n_bins}.")
        if fitted is None:
            fitted = self._vocabulary_state()
        from scattn.data import GeneVocabulary

        GeneVocabulary(fitted.var_names, special_tokens)  # unique IDs, no clash with specials
        self._init_panel(fitted)
        #: the registered conditions, in the module's order (empty without ``condition_key``)
        self.conditions_: list[str] = self._registered_levels(CONDITION_KEY)
        self.module = self._module_cls(
            **self._module_gene_args(fitted),
            **fitted.buffers,
            n_batch=self.n_batch,
            n_conditions=len(self.conditions_),
            special_tokens=tuple(special_tokens),
            n_bins=n_bins,
            ecs_threshold=ecs_threshold,
            n_cls_layers=n_cls_layers,
            cls_value=cls_value,
            pooling=pooling,
            sample_tokens=sample_tokens,
            **arch,
        )
        self._describe_pooling()
        self._model_summary_string = (
            f"SCGPT: {len(self.var_names_)} genes in the vocabulary, {len(self.classes_) or 'no'} "
            f"classes, {self.n_batch or 'no'} batches, {len(self.conditions_) or 'no'} conditions, "
            f"{arch['n_layers']} layers, width {arch['d_model']}, {arch['n_heads']} heads, "
            f"{arch['max_length']} tokens, {n_bins} value bins, {pooling} pooling"
        )
        self._record_init_params(locals())

    def _registered_levels(self, registry_key: str) -> list[str]:
        if registry_key not in self.adata_manager.data_registry:
            return []
        return [str(c) for c in self.adata_manager.get_state_registry(registry_key).categorical_mapping]

    @classmethod
    def from_scgpt(cls, model_dir: str | os.PathLike, adata: AnnData, *, max_length: int | None = None,
                   cls_value: float = 0.0, keep_classifier: bool = False,
                   min_gene_overlap: float = 0.5) -> SCGPT:
        """A model on `adata` with the weights of an original scGPT checkpoint.

        Reads scGPT's directory layout: ``args.json`` (architecture), ``vocab.json`` (``{token:
        id}``) and ``best_model.pt`` (the state dict of scGPT's ``TransformerModel``; attention
        weights named ``in_proj_*``, flash-attention's ``Wqkv`` or ``_impl.Wqkv``). The
        vocabulary becomes the checkpoint's genes found among `adata`'s registered gene IDs
        (scGPT uses symbols), their embedding rows copied; the special tokens keep theirs.
        Encoder, value encoder, GEP and GEPC decoders, and (with the checkpoint's batch labels)
        the batch embedding and discriminator are loaded; ``flag_encoder`` (pretraining only) is
        skipped. With labels registered a new cell-type head is added (``keep_classifier``:
        copy the checkpoint's when it has as many classes, taken in the order of
        ``model.classes_``).

        Loading is strict: every tensor of the architecture ``args.json`` describes must be in
        the file (a missing layer is not left random), every tensor of the file must have a
        place in the model, and shapes must agree; otherwise a ``ValueError`` names the keys
        (a few, and their number) and the likely cause (``args.json`` and ``best_model.pt``
        from different models). A truncated or corrupt ``best_model.pt`` is refused naming
        the file.

        Parameters
        ----------
        model_dir
            The checkpoint directory.
        adata
            Registered with ``SCGPT.setup_anndata`` (with ``batch_key`` when the checkpoint
            was fine-tuned with batch labels: as many batches).
        max_length
            Tokens per cell at most; `None`: the checkpoint's ``max_seq_len``.
        cls_value
            Value input of ``<cls>``: 0 as in scGPT's fine-tuning tutorials; -2 (the pad value)
            reproduces its pretraining and ``scgpt.tasks.embed_data`` (whose embeddings are
            then L2-normalised).
        keep_classifier
            Copy the checkpoint's cell-type head (see above).
        min_gene_overlap
            Smallest share of `adata`'s genes that must be in the checkpoint's vocabulary.

        Returns
        -------
        The model, with ``is_pretrained_ = True``.

        Notes
        -----
        Supported: scGPT's defaults, ``input_style="binned"``,
        ``input_emb_style="continuous"``, ``cell_emb_style="cls"``, post-norm layers (PyTorch's
        or flash-attention's), GEPC's ``"inner product"`` decoder or none (``MVC``/``do_mvc``
        false: the GEPC decoder is then new, with a warning), ``use_batch_labels``, DAR.
        Refused with the reason, because they change the outputs and are not implemented:
        ``pre_norm=true`` (scGPT's flash-attention pre-norm layer keeps the normalised stream
        as the residual, which is not PyTorch's ``norm_first``), ``cell_emb_style`` ``"avg-pool"``
        (a mean over every position, padding included) or ``"w-pool"``,
        ``explicit_zero_prob``, domain-specific batch norm (``domain_spec_batchnorm``/``DSBN``),
        category or scaling value embeddings, unbinned ``input_style``, linear attention
        (``fast_transformer_backend="linear"``), other GEPC decoder styles, a pad token other
        than ``<pad>``. The checkpoint file is read with
        ``torch.load(weights_only=True)``.
        """
        from ._scgpt_checkpoint import load_scgpt

        return load_scgpt(cls, model_dir, adata, max_length=max_length, cls_value=cls_value,
                          keep_classifier=keep_classifier, min_gene_overlap=min_gene_overlap)

    def _reshaped_weight(self, key: str, ref: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """A source without (or with) batches or conditions for a model with (or without): the
        expression decoders' input grows (zero columns: the new inputs change nothing yet) or
        keeps the state's part."""
        rows = key == "cell_decoder.W.weight"
        if key in ("expression_decoder.fc.0.weight", "cell_decoder.W.weight"):
            out = torch.zeros_like(value)
            n = min(ref.shape[0 if rows else 1], value.shape[0 if rows else 1])
            if rows:
                out[:n] = ref[:n]
            else:
                out[:, :n] = ref[:, :n]
            return out
        return super()._reshaped_weight(key, ref, value)

    # -- training ------------------------------------------------------------------------------
    def _tasks(self, tasks: Sequence[str] | None, weights: dict[str, float] | None) -> dict[str, float]:
        """Task weights from `tasks` (default weights) and `weights` (overrides)."""
        chosen = dict.fromkeys(tasks or (), 0.0)
        for k in chosen:
            chosen[k] = TASK_WEIGHTS.get(k, 1.0)
        chosen.update({k: float(v) for k, v in (weights or {}).items()})
        unknown = sorted(set(chosen) - set(TASK_WEIGHTS))
        if unknown:
            raise ValueError(f"Unknown task(s) {unknown}; choose among {', '.join(TASK_WEIGHTS)}.")
        if chosen.get("dar") and self.n_batch < 2:
            key = self._setup_args.get("batch_key")
            raise ValueError(
                "DAR (adversarial batch removal) needs at least two batches; "
                + (f"adata.obs[{key!r}] has one batch. Train without 'dar' or set up data with "
                   "several batches." if key else "set the model up with batch_key.")
            )
        if chosen.get("cls"):
            self._require_classifier()
            self._require_labelled_cells()
        if chosen.get("ecs") and not any(chosen.get(k) for k in ("gep", "gepc", "cls")):
            raise ValueError("ECS alone collapses the embedding; train it with GEP/GEPC (or CLS).")
        return {k: v for k, v in chosen.items() if v > 0}

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
        tasks: Sequence[str] = ("gep", "gepc"),
        weights: dict[str, float] | None = None,
        mask_ratio: float | Sequence[float] = (0.25, 0.5, 0.75),
        generative: bool = True,
        warmup_fraction: float = 0.05,
        **trainer_kwargs,
    ) -> None:
        """Generative pretraining on any cells (labels never read).

        scGPT's recipe at a CPU scale: per minibatch a mask ratio is drawn from `mask_ratio`
        and that share of each cell's gene tokens becomes unknown (value input -1); under the
        generative attention mask unknown tokens attend to the known tokens and themselves only.
        GEP predicts the unknown tokens' expression from their states, GEPC every gene's from the
        cell embedding. AdamW, linear warm-up and decay. Minibatches group cells of similar length.

        Parameters
        ----------
        adata
            Cells to pretrain on (`None`: the model's own); other data are matched to the
            vocabulary by gene ID.
        %(train)s
        min_gene_overlap
            Smallest share of `adata`'s genes that must be in the vocabulary (lower it for a
            pretraining corpus holding many genes the vocabulary never had).
        tasks, weights
            Tasks trained (``"gep"``, ``"gepc"``, ``"ecs"``, ``"dar"``) and weights overriding
            the defaults (GEP 1, GEPC 1, ECS 10, DAR 1).
        mask_ratio
            Share of gene tokens masked, or several to draw from per minibatch.
        generative
            Use the generative attention mask (`False`: every token attends to every token,
            BERT-style masked value prediction).
        warmup_fraction
            Share of the steps with a rising learning rate.

        Notes
        -----
        %(train_defaults)s

        History (``train_loss``, ``validation_loss``, ``gep_train``, ``gepc_train``...) is in
        ``model.pretrain_history_``; ``model.is_pretrained_`` becomes `True`.
        """
        task_weights = self._tasks(tasks, weights)
        args = self._args_of_call(self._pretrain_defaults, locals(), n_cells=self.adata.n_obs if adata is None else adata.n_obs)
        if args.has_validation:  # validation every epoch (scvi-tools validates only when early stopping)
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        plan = dict(weights=task_weights, mask_ratio=mask_ratio, generative=generative, lr=args.lr,
                    weight_decay=args.weight_decay, optimizer="AdamW", schedule="linear",
                    warmup_fraction=warmup_fraction, eps=1e-6)
        plan.update(plan_kwargs or {})
        self._pretrain(adata, plan_kwargs=plan, args=args, accelerator=accelerator, devices=devices,
                       min_gene_overlap=min_gene_overlap, datasplitter_kwargs=datasplitter_kwargs,
                       **trainer_kwargs)

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
        tasks: Sequence[str] | None = None,
        weights: dict[str, float] | None = None,
        mask_ratio: float = 0.4,
        warmup_fraction: float = 0.1,
        **trainer_kwargs,
    ) -> None:
        """Fine-tune (or, without :meth:`pretrain`, train from scratch) for annotation or
        integration.

        `tasks` `None`: ``("cls",)`` when labels are registered (annotation: cross-entropy of
        the labelled cells), else ``("gep", "gepc", "ecs")`` plus ``"dar"`` with two or more
        batches (integration, scGPT's recipe: masked value prediction without the generative
        mask, GEPC, elastic cell similarity, adversarial batch removal; the batch embedding
        goes to the expression decoders, never to the encoder). AdamW, linear warm-up and
        decay, early stopping on the validation loss. The default learning rate, 1e-3: on
        pbmc68k_reduced, 5e-4 left the classifier at the majority class for longer and 3e-3
        never left it; minibatches of 32 cells (ECS and DAR compare cells within a minibatch).

        Parameters
        ----------
        %(train)s
        tasks, weights
            Tasks (``"gep"``, ``"gepc"``, ``"ecs"``, ``"dar"``, ``"cls"``) and weights
            overriding the defaults (GEP 1, GEPC 1, ECS 10, DAR 1, CLS 1).
        mask_ratio
            Share of gene tokens masked for GEP.
        warmup_fraction
            Share of the steps with a rising learning rate.

        Notes
        -----
        %(train_defaults)s

        History (``train_loss``, ``validation_loss``, each task's ``<task>_train`` /
        ``<task>_validation``, ``accuracy_*`` with CLS) is in ``model.history``.
        """
        if tasks is None and not weights:
            if self._has_labels and self.module.has_head:
                tasks = ("cls",)
            else:
                tasks = ("gep", "gepc", "ecs", *(("dar",) if self.n_batch > 1 else ()))
        task_weights = self._tasks(tasks, weights)
        self._check_own_data()
        call = locals()
        with self._training_cells() as data:
            args = self._args_of_call(self._train_defaults, call,
                                      n_cells=(self.adata if data is None else data).n_obs)
            plan = dict(weights=task_weights, mask_ratio=mask_ratio, generative=False, lr=args.lr,
                        weight_decay=args.weight_decay, optimizer="AdamW", schedule="linear",
                        warmup_fraction=warmup_fraction, eps=1e-6)
            if "cls" in task_weights:
                plan["class_weights"] = self._balanced_class_weights(data)
            plan.update(plan_kwargs or {})
            self._run_training(MultiTaskPlan(self.module, **plan), args, adata=data, accelerator=accelerator,
                               devices=devices, datasplitter_kwargs=datasplitter_kwargs, **trainer_kwargs)

    # -- outputs -------------------------------------------------------------------------------
    @scattn_dsp.dedent
    def predict(self, adata: AnnData | None = None, *, key_added: str | None = None, inplace: bool = True,
                attention_top_k: int = 50, batch_size: int | None = None, min_gene_overlap: float = 0.5,
                **kwargs) -> PredictionResult | EmbeddingResult | None:
        """Predict cell types (a model with labels), or write the embedding and attribution.

        With a classifier this is :meth:`scattn.model.base.ClassifierMixin.predict` (same
        arguments and slots: ``obs[f"{key}_prediction"]``, ``obs[f"{key}_confidence"]``,
        ``obsm[f"{key}_probabilities"]``, ``obsm[f"X_{key}"]``, ``layers[f"{key}_attention"]``,
        ``uns[f"{key}_markers"]``, ``uns[key]["params"]``). Without one (a pretrained or
        integration model) it writes ``obsm[f"X_{key}"]`` (the cell embedding),
        ``layers[f"{key}_attention"]`` (each cell's `attention_top_k` largest attribution
        weights) and ``uns[key]["params"]``.

        Parameters
        ----------
        %(adata)s
        key_added
            Prefix of every key written (default ``"scgpt"``).
        inplace
            Write into `adata`; `False`: return the result object.
        attention_top_k
            Attribution weights kept per cell.
        %(batch_size)s
        min_gene_overlap
            Smallest fraction of the model's genes that `adata` must have.
        **kwargs
            The classifier's other arguments (``unknown_threshold``, ``n_markers``).

        Returns
        -------
        `None` with ``inplace=True`` (the slots above written), else a
        :class:`~scattn.model.base.PredictionResult` or
        :class:`~scattn.model.base.EmbeddingResult`.
        """
        if self.module.has_head:
            return super().predict(adata, key_added=key_added, inplace=inplace,
                                   attention_top_k=attention_top_k, batch_size=batch_size,
                                   min_gene_overlap=min_gene_overlap, **kwargs)
        if kwargs:
            raise TypeError(f"{', '.join(kwargs)}: only for a model with a classifier.")
        return self._predict_embedding(adata, key_added=key_added, inplace=inplace,
                                       attention_top_k=attention_top_k, batch_size=batch_size,
                                       min_gene_overlap=min_gene_overlap,
                                       params={"batch_key": self._setup_args.get("batch_key")})

    @scattn_dsp.dedent
    def predict_response(self, adata: AnnData | None = None, indices=None, *, condition: str,
                         layer_added: str | None = None, batch_size: int | None = None
                         ) -> np.ndarray | None:
        """Expression of cells under `condition` (e.g. control cells under stimulation).

        Each cell is encoded with its own tokens and the condition token `condition` (in place
        of its own), and GEPC decodes every model gene from the cell embedding and the
        condition (and its batch's) embedding. Train the model with ``condition_key`` set up
        and both conditions present (e.g. control cells of every population and stimulated
        cells of those seen stimulated).

        Parameters
        ----------
        %(adata)s
        %(indices)s
        condition
            A condition the model was set up with.
        layer_added
            Write the prediction into ``adata.layers[layer_added]`` (cells x ``adata``'s genes;
            genes outside the vocabulary get 0; needs every cell, so not with `indices`) and
            return `None`.
        %(batch_size)s

        Returns
        -------
        Cells x model genes (columns ``model.var_names_``) predicted log-normalised expression
        (``log1p`` of counts per 10,000 over the model's genes), or `None` with `layer_added`.
        Cells with no counts on any of the model's genes get NaN rows (one warning gives their
        number), as ``predict`` labels them ``"Unknown"``.
        """
        if not self.conditions_:
            raise ValueError("This SCGPT has no condition tokens; set it up with condition_key.")
        if str(condition) not in self.conditions_:
            raise ValueError(f"condition {condition!r} is not one the model was trained with "
                             f"({', '.join(map(repr, self.conditions_))}).")
        if layer_added is not None and indices is not None:
            raise ValueError("layer_added writes every cell; call without indices.")
        self._check_usable()
        code = self.conditions_.index(str(condition))
        out = self._infer(adata, indices=indices, batch_size=batch_size,
                          keys=(MODULE_KEYS.EXPRESSION,), return_expression=True,
                          condition_override=code, with_empty=True, desc="SCGPT.predict_response")
        expression = self._blank_empty_cells(out[MODULE_KEYS.EXPRESSION], out["empty"],
                                             "predicted expression")
        if layer_added is None:
            return expression
        target = self.adata if adata is None else adata
        from scipy import sparse

        ids = self._gene_names_of(target, self._setup_args)
        pos = pd.Index(ids).get_indexer(self.var_names_)
        have = np.flatnonzero(pos >= 0)
        have = have[np.argsort(pos[have])]  # columns in `target`'s order
        n, k = target.n_obs, len(have)
        # built as CSR from the model genes' columns, never as a dense cells x all-genes matrix
        layer = sparse.csr_matrix(
            (np.clip(expression[:, have], 0, None).astype(np.float32).ravel(), np.tile(pos[have], n),
             np.arange(n + 1, dtype=np.int64) * k), shape=(n, target.n_vars))
        layer.eliminate_zeros()
        write_results(target, [("layers", layer_added, layer)], by="SCGPT.predict_response")
        return None

    def get_gene_embeddings(self) -> pd.DataFrame:
        """The gene token embeddings (after their layer norm), genes x ``d_model``, indexed by
        the model's gene IDs: the input of :func:`scattn.tl.gene_programs`."""
        with torch.no_grad():
            emb = self.module.all_gene_embeddings().float().cpu().numpy()
        return pd.DataFrame(emb, index=pd.Index(self.var_names_, name="gene"))

    @scattn_dsp.dedent
    @torch.no_grad()
    def get_gene_attention(self, adata: AnnData | None = None, indices=None, *,
                           genes: Sequence[str] | None = None, batch_size: int | None = None) -> pd.DataFrame:
        """Mean attention between gene tokens, over cells: row gene (query) to column gene (key).

        Last layer, mean over heads, averaged over the cells where both genes are tokens (NaN
        where they never are together): the input of :func:`scattn.tl.gene_network`.

        Parameters
        ----------
        %(adata)s
        %(indices)s
        genes
            Genes (IDs) to report, at most 5,000 (`None`: every model gene, if at most 5,000).
        %(batch_size)s
        """
        genes = [genes] if isinstance(genes, str) else genes  # one gene, as CGRAN's
        chosen = pd.Index(self.var_names_) if genes is None else pd.Index([str(g) for g in genes])
        if len(chosen) > 5000:
            raise ValueError(f"{len(chosen)} genes make a {len(chosen)}^2 matrix; pass `genes=` "
                             "(at most 5,000, e.g. the highly variable ones).")
        pos = self._gene_positions(list(chosen))
        self._check_usable()
        def run(tensors):
            inputs = {k: v.to(self.module.device) for k, v in self.module._get_inference_input(tensors).items()}
            total, count = self.module.gene_attention(inputs["x"], inputs.get("condition"), genes=pos)
            return {"total": total, "count": count}

        sums = self._reduce(adata, run, indices=indices, batch_size=batch_size, desc="gene attention")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (sums["total"] / sums["count"]).numpy()
        return pd.DataFrame(mean, index=chosen, columns=chosen)
