"""Geneformer-style transformer as an scvi-tools model: rank-value tokens, masked pretraining,
fine-tuning, attention on genes, in-silico perturbation."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scattn._docs import scattn_dsp
from scattn._quiet import user_stacklevel
from scattn.data import (
    SPECIAL_TOKENS,
    GeneVocabulary,
    gene_nonzero_medians,
)
from scattn.module import MODULE_KEYS, GeneformerModule
from scattn.train import StepBudget, TrainDefaults

from .base import (
    AttentionMixin,
    ClassifierMixin,
    FittedState,
    LatentMixin,
    PretrainingMixin,
    QueryMixin,
    ScattnModel,
    VocabularyMixin,
    weights_fingerprint,
)

logger = logging.getLogger(__name__)

#: named architectures: ``"cpu"`` (the default, sized for a laptop) and ``"v1"`` (Geneformer V1)
PRESETS: dict[str, dict] = {
    "cpu": dict(n_layers=4, d_model=128, n_heads=4, d_ff=256, max_length=256, dropout=0.0,
                attention_dropout=0.0, activation="relu"),
    "v1": dict(n_layers=6, d_model=256, n_heads=4, d_ff=512, max_length=2048, dropout=0.02,
               attention_dropout=0.02, activation="relu"),
}


@scattn_dsp.dedent
class Geneformer(VocabularyMixin, PretrainingMixin, QueryMixin, AttentionMixin, LatentMixin,
                 ClassifierMixin, ScattnModel):
    """Geneformer-style transformer (Theodoris et al. 2023): a BERT encoder over each cell's
    genes in rank-value order.

    Each cell's counts are divided by each gene's non-zero median over the pretraining corpus
    and its expressed genes, ranked by that value, become its tokens (``<cls>`` first),
    truncated to ``max_length``. :meth:`pretrain` trains the encoder to recover masked genes
    (15%%, BERT's 80/10/10 corruption); :meth:`from_pretrained` then starts a classifier on
    labelled data, fine-tuned by :meth:`train`. A model set up with labels can also be
    trained from scratch.

    Parameters
    ----------
    %(model_adata)s
    preset
        Architecture: ``"cpu"`` (default; 4 layers, width 128, 4 heads, feed-forward 256, 256
        tokens, no dropout: an epoch over ~17k cells takes minutes on 2 CPU cores, where V1
        takes about 2 hours) or ``"v1"`` (Geneformer V1: 6 layers, width 256, 4 heads,
        feed-forward 512, 2,048 tokens, dropout 0.02). The arguments below override it.
    n_layers, d_model, n_heads, d_ff
        Encoder depth, width, attention heads and feed-forward width.
    max_length
        Tokens per cell at most, ``<cls>`` included (the top-ranked genes are kept).
    dropout
        Dropout on embeddings and sub-layers (Geneformer: 0.02).
    attention_dropout
        Dropout on the attention weights (Geneformer: 0.02; on CPU any non-zero value leaves
        the fused attention kernel and costs about a third of the step time).
    activation
        Feed-forward activation (Geneformer V1: ``"relu"``).
    pooling
        Cell embedding: ``"cls"`` (default) the ``<cls>`` token's state, or ``"mean"`` the
        mean of the gene tokens' states (Geneformer's ``emb_mode="cell"``; ``<cls>``,
        ``<eos>`` and padding left out).
    emb_layer
        Layer the cell embedding is read from, counted back from the last as in Geneformer's
        ``EmbExtractor(emb_layer=...)``: ``0`` (default here) the last layer, ``-1`` the one
        before (Geneformer's default, and :meth:`from_huggingface`'s), down to ``-n_layers``
        (the embedding layer). Saved with the model; the classifier reads the last layer
        whatever it is.
    special_tokens
        Special tokens of the vocabulary (ids first, genes after). With ``<eos>`` (Geneformer
        V2) every cell's genes are followed by it.
    %(fitted)s

    Notes
    -----
    * **Vocabulary**: the registered genes (``var_names`` or the ``gene_id_key`` column),
      saved with the model; token ``len(special_tokens) + i`` is ``model.var_names_[i]``.
      New data are matched by ID: genes outside the vocabulary are dropped with a warning,
      and data sharing too few genes with it are an error naming the likely cause.
    * **Tokeniser**: counts or log1p values (the ranks are the same: the per-cell scale
      cancels); the gene medians are computed on the data the model is built on (its
      pretraining corpus) with :func:`scattn.data.gene_nonzero_medians` and kept with the
      model, as Geneformer keeps its corpus's. Values are compared in float64; equal values
      come in token-id order, whatever the order of the data's genes.
    * **Embedding** (``obsm["X_geneformer"]``, :meth:`get_latent_representation`): the
      ``<cls>`` token's hidden state (or the mean of the gene tokens' with ``pooling="mean"``)
      in layer ``emb_layer`` (default: the last, the state the classifier reads). A cell with
      no count on any vocabulary gene has no tokens: its row is NaN, with a warning.
    * **Attribution** (``get_attention``, ``layers["geneformer_attention"]``): the attention
      each gene token receives from ``<cls>`` in the last layer, averaged over heads (with
      ``pooling="mean"``: averaged over every token). Genes not among a cell's tokens get 0.
    * **Analyses**: :func:`scattn.tl.attention_shift` (pretrained vs fine-tuned attention per
      head and rank, and the per-head norm ``||sum a f(x)||``),
      :func:`scattn.tl.in_silico_perturbation` (delete or overexpress genes, embedding shifts
      toward each class).

    Examples
    --------
    >>> import scattn as sa
    >>> sa.model.Geneformer.setup_anndata(unlabelled)
    >>> base = sa.model.Geneformer(unlabelled)
    >>> base.pretrain()
    >>> sa.model.Geneformer.setup_anndata(labelled, labels_key="cell_type")
    >>> model = sa.model.Geneformer.from_pretrained(base, labelled)
    >>> model.train()
    >>> model.predict()  # adata.obs["geneformer_prediction"], adata.layers["geneformer_attention"], ...
    """

    _module_cls = GeneformerModule
    _key = "geneformer"
    _labels = "optional"
    _train_defaults = TrainDefaults(
        max_epochs=StepBudget(30, 300), lr=5e-4, weight_decay=1e-3, batch_size=32,
        early_stopping_patience=StepBudget(5, 100), extra={"warmup_fraction": 0.1})
    _pretrain_defaults = TrainDefaults(
        max_epochs=10, lr=1e-3, weight_decay=1e-3, batch_size=32, train_size=0.95,
        early_stopping=False, early_stopping_patience=3,
        extra={"mask_ratio": 0.15, "warmup_fraction": 0.05})
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
    ) -> None:
        """Register `adata` with Geneformer (labels optional: pretraining reads none).

        Parameters
        ----------
        %(setup_core)s
        %(setup_gene_id_key)s

        Notes
        -----
        %(setup_notes)s
        """
        cls._register(adata, labels_key, layer=layer, expression=expression,
                      unlabeled_category=unlabeled_category, classes=classes, gene_id_key=gene_id_key)

    def __init__(
        self,
        adata: AnnData,
        *,
        preset: Literal["cpu", "v1"] = "cpu",
        n_layers: int | None = None,
        d_model: int | None = None,
        n_heads: int | None = None,
        d_ff: int | None = None,
        max_length: int | None = None,
        dropout: float | None = None,
        attention_dropout: float | None = None,
        activation: Literal["relu", "gelu"] | None = None,
        pooling: Literal["cls", "mean"] | None = None,
        emb_layer: int | None = None,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        fitted: FittedState | None = None,
    ) -> None:
        super().__init__(adata)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
        arch = dict(PRESETS[preset])
        given = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                     max_length=max_length, dropout=dropout, attention_dropout=attention_dropout,
                     activation=activation)
        arch.update({k: v for k, v in given.items() if v is not None})
        if arch["max_length"] < 2:
            raise ValueError(f"max_length must be >= 2, got {arch['max_length']}.")
        for key in ("dropout", "attention_dropout"):
            if not 0 <= arch[key] < 1:
                raise ValueError(f"{key} must be in [0, 1), got {arch[key]}.")
        if fitted is None:
            fitted = self._fit_vocabulary()
        GeneVocabulary(fitted.var_names, special_tokens)  # unique IDs, no clash with specials
        self._init_panel(fitted)
        self.module = self._module_cls(
            **self._module_gene_args(fitted),
            **fitted.buffers,
            special_tokens=tuple(special_tokens),
            pooling=pooling,
            emb_layer=0 if emb_layer is None else emb_layer,
            **arch,
        )
        self._describe_pooling()
        self._model_summary_string = (
            f"Geneformer: {len(self.var_names_)} genes in the vocabulary, "
            f"{len(self.classes_) or 'no'} classes, {arch['n_layers']} layers, width "
            f"{arch['d_model']}, {arch['n_heads']} heads, feed-forward {arch['d_ff']}, "
            f"{arch['max_length']} tokens, {self.module.pooling} pooling"
            + (f" of layer {self.module.emb_layer}" if self.module.emb_layer else "")
        )
        self._record_init_params(locals())

    @classmethod
    def _readable_source_genes(cls, source) -> np.ndarray:
        """Genes whose median the source lacked (``inf``: absent from the data it was loaded
        on and from the median dictionary) stay unread on new data that has them, as the
        tokens never hold them: dropped with the alignment's warning, and a cell expressing only
        them counts as empty, instead of being silently tokenised as nothing."""
        medians = source.fitted.buffers.get("gene_medians")
        if medians is None:
            return super()._readable_source_genes(source)
        return np.isfinite(torch.as_tensor(medians, dtype=torch.float64).cpu().numpy())

    @classmethod
    def from_huggingface(
        cls,
        model_dir: str | os.PathLike,
        adata: AnnData,
        *,
        token_dictionary: dict[str, int] | str | os.PathLike,
        gene_median_dictionary: dict[str, float] | str | os.PathLike,
        max_length: int | None = None,
        pooling: Literal["cls", "mean"] | None = None,
        emb_layer: int = -1,
        min_gene_overlap: float = 0.5,
    ) -> Geneformer:
        """A model on `adata` with the weights of an original Geneformer checkpoint.

        Reads a Hugging Face ``BertForMaskedLM`` directory (``config.json`` and
        ``model.safetensors`` or ``pytorch_model.bin``), e.g. Geneformer's ``gf-6L-30M-i2048``
        (V1) or ``gf-12L-95M-i4096`` (V2) with its token and gene median dictionaries. The
        vocabulary is the token dictionary's (its special tokens, then its genes in token-id
        order), matched to `adata`'s registered gene IDs (vocabulary genes `adata` lacks read
        as zero); the tokeniser divides by the dictionary's medians and builds Geneformer's
        sequences: V1 dictionaries (``<pad>``, ``<mask>``) the ranked genes; V2 dictionaries
        (with ``<cls>`` and ``<eos>``) ``<cls>``, the ranked genes, ``<eos>`` (as
        ``TranscriptomeTokenizer(special_token=True)``). The architecture is the checkpoint's;
        its weights fill the encoder and the masked-LM head (token-type row 0 folded into the
        position embeddings, the decoder tied to the token embeddings). With labels
        registered, a new classifier head is added; :meth:`train` fine-tunes it.

        Parameters
        ----------
        model_dir
            The checkpoint directory.
        adata
            Registered with ``Geneformer.setup_anndata(adata, gene_id_key=...)`` (labels
            optional), its gene IDs the token dictionary's (Ensembl IDs for Geneformer).
        token_dictionary
            ``{token: id}`` (``"<pad>": 0``, ``"<mask>": 1``, genes after; Geneformer V2 adds
            ``<cls>`` and ``<eos>``), or the path of Geneformer's pickle.
        gene_median_dictionary
            ``{gene ID: non-zero median}``, or the path of Geneformer's pickle. A vocabulary
            gene of `adata` missing from it is an error (Geneformer's tokeniser cannot
            normalise it either); vocabulary genes `adata` lacks need none (they are never
            tokenised).
        max_length
            Tokens per cell at most, special tokens included (V2: ``<cls>`` and ``<eos>``
            leave ``max_length - 2`` genes, as Geneformer's ``model_input_size - 2``); `None`:
            the checkpoint's ``max_position_embeddings`` (also the upper limit).
        pooling
            Cell embedding: ``"cls"`` the ``<cls>`` state (Geneformer V2's
            ``emb_mode="cls"``), ``"mean"`` the mean of the gene tokens' states, ``<cls>`` and
            ``<eos>`` left out (``emb_mode="cell"``, V1's only mode). `None`: ``"cls"`` when
            the vocabulary has ``<cls>``, else ``"mean"`` (Geneformer's defaults).
        emb_layer
            Layer of the cell embedding, as Geneformer's ``EmbExtractor(emb_layer=...)``:
            ``-1`` (Geneformer's default) the layer before the last, ``0`` the last. Saved with
            the model; :meth:`get_latent_representation` takes another per call.
        min_gene_overlap
            Smallest share of `adata`'s genes that must be in the token dictionary.

        Returns
        -------
        The model, with ``is_pretrained_ = True`` (``from_pretrained``, ``train``,
        ``save``/``load`` work as for a model pretrained here).

        Notes
        -----
        Cell embeddings equal ``EmbExtractor(emb_mode=..., emb_layer=...)``'s on the same
        cells: ``pooling="cls"``/``"mean"`` is ``emb_mode="cls"``/``"cell"``, ``emb_layer``
        the same number. Equally expressed genes (ties) come in token-id order; Geneformer's
        ``np.argsort`` leaves their order to NumPy's unstable sort, which differs between
        machines. Only BERT's layer norm epsilon (1e-12) and ``relu``/``gelu`` activations are
        supported. Pickles run code when read: load only files you trust.
        """
        from . import _geneformer_hf as hf

        manager = cls._get_most_recent_anndata_manager(adata) if isinstance(adata, AnnData) else None
        if manager is None:
            raise ValueError(f"Register adata first: `sa.model.{cls.__name__}.setup_anndata(adata, "
                             "gene_id_key=...)`.")
        config = hf.read_config(model_dir)
        vocab = GeneVocabulary.from_token_dictionary(hf.read_token_dictionary(token_dictionary))
        specials = hf.special_tokens_of(vocab, config)
        arch = hf.architecture(config, max_length=max_length)
        state = hf.read_state_dict(model_dir)
        genes = cls._gene_names_of(adata)
        vocab.match(genes, min_overlap=min_gene_overlap, what="adata")
        fitted = hf.fitted_state(vocab, genes, adata.n_vars, hf.read_gene_medians(gene_median_dictionary))
        weights = hf.module_state_from_bert(state, n_layers=arch["n_layers"], max_length=arch["max_length"])
        if pooling is None:
            pooling = "cls" if "<cls>" in specials else "mean"
        model = cls(adata, **arch, pooling=pooling, emb_layer=emb_layer, special_tokens=specials,
                    fitted=fitted)
        hf.load_into_module(model.module, weights)
        model.module.eval()
        model.is_pretrained_ = True
        model.pretrained_from_ = weights_fingerprint(model.module)  # the published weights
        model._model_summary_string += f"; weights from {os.path.basename(os.path.normpath(model_dir))}"
        return model

    def _fit_vocabulary(self) -> FittedState:
        """Every registered gene, and its non-zero median on the registered cells."""
        state = self._vocabulary_state()
        matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        medians = gene_nonzero_medians(matrix, expression=self._setup_args["expression"])
        state.buffers["gene_medians"] = torch.as_tensor(medians, dtype=torch.float32)
        return state

    # -- training ------------------------------------------------------------------------------
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
        mask_ratio: float = 0.15,
        warmup_fraction: float = 0.05,
        **trainer_kwargs,
    ) -> None:
        """Masked-gene pretraining on any cells (labels are never read).

        Geneformer's recipe at a CPU scale: 15%% of the gene tokens are chosen and corrupted
        (80%% ``<mask>``, 10%% a random gene, 10%% unchanged), the loss is the cross-entropy of
        the true gene at those positions only; AdamW with weight decay (Geneformer: 0.001), the
        learning rate warmed up linearly over the first `warmup_fraction` of steps and decayed
        linearly to zero. Minibatches group cells of similar length.

        Parameters
        ----------
        adata
            Cells to pretrain on (`None`: the model's own, which set its vocabulary and
            medians); other data are matched to the vocabulary by gene ID. Several files:
            :func:`scattn.data.read_h5ads`.
        %(train)s
        min_gene_overlap
            Smallest share of `adata`'s genes that must be in the vocabulary (lower it for a
            pretraining corpus holding many genes the vocabulary never had).
        mask_ratio
            Share of gene tokens chosen for prediction (Geneformer: 0.15).
        warmup_fraction
            Share of the steps with a rising learning rate.

        Notes
        -----
        %(train_defaults)s

        History (``train_loss``, ``validation_loss``, ``masked_accuracy_*``) is in
        ``model.pretrain_history_``; ``model.is_pretrained_`` becomes `True`.
        """
        args = self._args_of_call(self._pretrain_defaults, locals(), n_cells=self.adata.n_obs if adata is None else adata.n_obs)
        # the validation cells are scored every epoch (scvi-tools validates only when early stopping)
        if args.has_validation:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        plan = dict(mask_ratio=mask_ratio, lr=args.lr, weight_decay=args.weight_decay, optimizer="AdamW",
                    schedule="linear", warmup_fraction=warmup_fraction, eps=1e-6)
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
        warmup_fraction: float = 0.1,
        **trainer_kwargs,
    ) -> None:
        """Fine-tune (or, without :meth:`pretrain`, train from scratch) the classifier.

        AdamW on the cross-entropy of the labelled cells, the learning rate warmed up over the
        first `warmup_fraction` of steps and decayed linearly; early stopping on the
        validation loss.

        Parameters
        ----------
        %(train)s
        warmup_fraction
            Share of the steps with a rising learning rate.

        Notes
        -----
        %(train_defaults)s
        """
        plan = dict(optimizer="AdamW", schedule="linear", warmup_fraction=warmup_fraction, eps=1e-6)
        plan.update(plan_kwargs or {})
        super().train(max_epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                      train_size=train_size, validation_size=validation_size,
                      early_stopping=early_stopping, early_stopping_patience=early_stopping_patience,
                      restore_best_weights=restore_best_weights, accelerator=accelerator,
                      devices=devices, precision=precision, plan_kwargs=plan,
                      datasplitter_kwargs=datasplitter_kwargs, **trainer_kwargs)

    # -- embeddings and analyses -----------------------------------------------------------
    @scattn_dsp.dedent
    def get_latent_representation(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None, *,
        emb_layer: int | None = None,
    ) -> np.ndarray:
        """The cell embedding (cells x width): the ``<cls>`` state, or the mean of the gene
        tokens' states with ``pooling="mean"``, in layer `emb_layer`.

        Parameters
        ----------
        %(adata)s
        %(indices)s
        %(batch_size)s
        emb_layer
            Layer counted back from the last, as Geneformer's ``EmbExtractor(emb_layer=...)``:
            0 the last, -1 the one before. `None`: the model's (``model.module.emb_layer``;
            -1 for :meth:`from_huggingface`, else 0).

        Returns
        -------
        ``(cells, d_model)`` float32; NaN rows for cells with no count on any vocabulary gene
        (no tokens to embed), with a warning saying how many.
        """
        self._check_usable()
        out = self._infer(adata, indices=indices, batch_size=batch_size, keys=(MODULE_KEYS.Z,),
                          emb_layer=emb_layer, desc=f"{type(self).__name__}.get_latent_representation")
        return self._warn_untokenised(out[MODULE_KEYS.Z])

    def _warn_untokenised(self, z: np.ndarray, *, perturbed: bool = False) -> np.ndarray:
        """Warn once about the NaN rows of an embedding (cells without a gene token)."""
        empty = int(np.isnan(z).all(axis=1).sum()) if z.size else 0
        if empty:
            why = " (or only the deleted genes)" if perturbed else ""
            warnings.warn(
                f"{empty} cells have no counts on any of the model's {len(self.var_names_)} "
                f"vocabulary genes{why}, so no gene tokens; their embedding rows are NaN.",
                UserWarning, stacklevel=user_stacklevel(),
            )
        return z

    @scattn_dsp.dedent
    def get_perturbed_representation(
        self, adata: AnnData | None = None, indices=None, *, genes: Sequence[str],
        mode: Literal["delete", "overexpress"] = "delete", batch_size: int | None = None,
        emb_layer: int | None = None,
    ) -> np.ndarray:
        """The cell embedding after deleting `genes` from each cell's tokens, or moving them to
        the front (``"overexpress"``; in the order given), as Geneformer's in-silico perturbation.

        Parameters
        ----------
        %(adata)s
        %(indices)s
        genes
            Gene IDs of the vocabulary.
        mode
            ``"delete"`` or ``"overexpress"``.
        %(batch_size)s
        emb_layer
            As :meth:`get_latent_representation`.

        Returns
        -------
        ``(cells, d_model)``; NaN rows (with a warning) for cells left without a gene token.
        """
        if mode not in ("delete", "overexpress"):
            raise ValueError(f"mode must be 'delete' or 'overexpress', got {mode!r}.")
        pos = self._gene_positions(genes)
        self._check_usable()
        out = self._infer(adata, indices=indices, batch_size=batch_size, keys=(MODULE_KEYS.Z,),
                          perturb=pos, perturb_mode=mode, emb_layer=emb_layer,
                          desc="Geneformer.get_perturbed_representation")
        return self._warn_untokenised(out[MODULE_KEYS.Z], perturbed=mode == "delete")

    @scattn_dsp.dedent
    @torch.no_grad()
    def get_attention_statistics(self, adata: AnnData | None = None, indices=None, *, n_ranks: int = 512,
                                 batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Attention per layer, head and rank position, averaged over cells.

        Parameters
        ----------
        %(adata)s
        %(indices)s
        n_ranks
            Rank positions reported (the first `n_ranks` gene tokens).
        %(batch_size)s

        Returns
        -------
        ``received`` ``(layers, heads, n_ranks)``: the mean attention the gene token at each
        rank receives (from ``<cls>``, or averaged over tokens with ``pooling="mean"``; NaN where
        no cell has that many genes); ``count`` ``(n_ranks,)``: cells with a gene at that rank;
        ``norms`` ``(layers, heads)``: the mean over cells and tokens of each head's
        contribution norm ``||sum_j a_ij f_h(x_j)||`` (Kobayashi et al. 2020).
        """
        if n_ranks < 1:
            raise ValueError(f"n_ranks must be >= 1, got {n_ranks}.")
        def run(tensors):
            x = tensors[REGISTRY_KEYS.X_KEY].to(self.module.device)
            return {**self.module.attention_statistics(x, n_ranks), "cells": x.shape[0]}

        total = self._reduce(adata, run, indices=indices, batch_size=batch_size, desc="attention statistics")
        count = total["count"].numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            received = total["received"].numpy() / np.where(count > 0, count, np.nan)
        return {"received": received, "count": count.astype(np.int64),
                "norms": total["norms"].numpy() / max(float(total["cells"]), 1.0)}
