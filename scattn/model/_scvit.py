"""scViT: the vision-transformer autoencoder, an scVI you can swap in."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Literal

import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data.fields import CategoricalObsField
from scvi.model.base import RNASeqMixin, VAEMixin

from scattn._compat import get_max_epochs_heuristic, scvi_module_keys
from scattn._docs import scattn_dsp
from scattn._settings import settings
from scattn.data import check_input, check_not_empty, order_genes
from scattn.module import SCVITModule
from scattn.train import SCVI_EPOCHS, GenerativePlan, TrainDefaults

from .base import AttentionMixin, EmbeddingResult, FittedState, ScattnModel, Source
from .base._fitted import check_shared_genes

#: scvi-tools' module keys, which scViT's module outputs
KEYS = scvi_module_keys()
logger = logging.getLogger(__name__)

_BATCH_WEIGHTS = "covariates.0.weight"  # the batch columns of every covariate-injected layer


def _eval_mode(module, args) -> None:
    module.training = False


@scattn_dsp.dedent
class SCVIT(RNASeqMixin, VAEMixin, AttentionMixin, ScattnModel):
    """scViT: a vision-transformer style variational autoencoder for counts (Lindqvist).

    The genes, put in an order (`gene_order`; by default co-expressed genes side by side),
    are cut into patches of `patch_size` genes, each mapped to a token by its own linear map
    (or, as in the report, by a convolutional stem); patch-wise linear layers (each patch its
    own weights), SELU, multi-head self-attention over the patches, dropout and batch norm
    follow; the patches are flattened and a fully connected layer gives the mean and standard
    deviation of a Gaussian latent. The decoder mirrors it and ends in a zero-inflated negative
    binomial (scvi-tools' distribution) with the cell's library size, a dispersion per gene
    and the batch (and categorical covariates) as inputs, as scVI's decoder. Trained on the
    evidence lower bound with AdamW (cosine annealing on request).

    The defaults are the best variant of the ablation in ``benchmarks/results/scvit.md``; the
    report's configuration is ``SCVIT(adata, stem="conv", patch_size=16, n_heads=4,
    gene_order="given")`` trained with ``cosine_annealing=True``.

    It is used like :class:`scvi.model.SCVI`: the same ``setup_anndata`` arguments and
    methods (``get_latent_representation``, ``get_normalized_expression``,
    ``differential_expression``, ``get_reconstruction_error``, ``get_elbo``,
    ``load_query_data``); ``predict`` writes the embedding and the attribution.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (raw counts; every gene is read, so
        select variable genes first, as for scVI).
    n_latent
        Latent dimensions.
    n_hidden
        Width of the fully connected layers.
    patch_size
        Genes per patch.
    d_model
        Width of a patch token.
    n_heads
        Attention heads over the patches (``0``: no attention).
    n_blocks
        Patch blocks in the encoder and in the decoder.
    gene_order
        Order of the genes along the patches: ``"correlation"`` (co-expressed genes side by
        side, from the training data), ``"given"`` (as in `adata`), ``"mean"``,
        ``"random"``, or a list of every gene; see :func:`scattn.data.order_genes`.
    stem
        ``"linear"`` (a linear map per patch), ``"conv"`` (the report's convolutional stem;
        `patch_size` a power of two), ``"shared"`` (one linear map for all patches).
    patchwise
        Per-patch weights in the patch blocks (`False`: shared, as in a ViT).
    dropout
        Dropout rate.
    gene_likelihood
        ``"zinb"`` or ``"nb"``.
    encode_covariates
        Also give the batch and covariates to the encoder.
    encoder, decoder
        ``"patch"`` (scViT) or ``"dense"`` (scVI's fully connected structure for that half;
        for ablations).
    %(fitted)s

    Notes
    -----
    **Attribution** (``get_attention``, ``predict``'s ``f"{key}_attention"`` layer): the
    attention each patch *receives* in the first encoder block (averaged over heads and over
    the patches attending), shared among the patch's genes in proportion to each gene's
    log-normalised expression in the cell. A gene scores high when it carries much of a patch
    that the other patches read. With ``n_heads=0`` every weight is zero.

    **Embedding**: the mean of the Gaussian posterior, as scVI's
    ``get_latent_representation()``.
    """

    _module_cls = SCVITModule
    _key = "scvit"
    #: a query model training only its new batch columns (set by load_query_data, not saved)
    _frozen_query = False
    #: what ``load_query_data(unfrozen=None)`` means (scvi-tools: the new batch columns only)
    _default_unfrozen = False
    _labels = "optional"
    _batch_key = True
    _covariates = True
    _train_defaults = TrainDefaults(
        max_epochs=SCVI_EPOCHS, lr=1e-3, weight_decay=1e-2, batch_size=128, early_stopping=False,
        early_stopping_patience=45, extra={"n_epochs_kl_warmup": 400, "cosine_annealing": False})
    _attention_description = ("attention received by each gene's patch in the first encoder "
                               "block (mean over heads and querying patches), shared by the "
                               "gene's share of the patch's log-normalised expression")

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        *,
        unlabeled_category: str = "Unknown",
    ) -> None:
        """Register `adata` (raw counts) with scViT; the arguments of :meth:`scvi.model.SCVI.setup_anndata`.

        Parameters
        ----------
        adata
            Cells x genes AnnData with raw counts.
        layer
            Layer with the counts; `None`: ``adata.X``.
        batch_key
            ``adata.obs`` column of each cell's batch (every batch needs at least two cells).
        labels_key
            ``adata.obs`` column of cell types; optional, never used in training (reports).
        categorical_covariate_keys
            ``adata.obs`` columns of other categorical covariates (given to the decoder).
        unlabeled_category
            Label value meaning "unlabelled".
        """
        if isinstance(adata, AnnData) and batch_key is not None and batch_key in adata.obs:
            check_not_empty(adata)
            sizes = adata.obs[batch_key].value_counts()
            single = sizes.index[sizes == 1].astype(str).tolist()
            if single:
                raise ValueError(
                    f"Batch(es) {', '.join(map(repr, single[:5]))} of adata.obs[{batch_key!r}] "
                    "hold a single cell; a batch effect cannot be learnt from one cell. Merge "
                    "them into a neighbouring batch or drop them."
                )
        cls._register(adata, labels_key, layer=layer, expression="counts",
                      unlabeled_category=unlabeled_category, batch_key=batch_key,
                      categorical_covariate_keys=categorical_covariate_keys)

    @classmethod
    def _anndata_fields(cls, *, batch_key, **kwargs) -> list:
        # a batch field always (one batch without a key), as scVI registers it
        fields = super()._anndata_fields(batch_key=None, **kwargs)
        fields.insert(1, CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key))
        return fields

    def __init__(
        self,
        adata: AnnData,
        n_latent: int = 10,
        n_hidden: int = 128,
        patch_size: int = 64,
        d_model: int = 32,
        n_heads: int = 2,
        n_blocks: int = 1,
        gene_order: str | Sequence[str] = "correlation",
        stem: Literal["conv", "linear", "shared"] = "linear",
        patchwise: bool = True,
        dropout: float = 0.1,
        gene_likelihood: Literal["zinb", "nb"] = "zinb",
        encode_covariates: bool = False,
        encoder: Literal["patch", "dense"] = "patch",
        decoder: Literal["patch", "dense"] = "patch",
        *,
        fitted: FittedState | None = None,
    ) -> None:
        super().__init__(adata)
        if fitted is None:
            lognorm = self._registered_lognorm()
            order = order_genes(lognorm, gene_order, var_names=self.adata.var_names,
                                seed=settings.seed or 0)
            fitted = FittedState([str(g) for g in self.adata.var_names[order]], order)
        self._init_panel(fitted)
        cats = []
        if REGISTRY_KEYS.CAT_COVS_KEY in self.adata_manager.data_registry:
            cats = list(self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY).n_cats_per_key)
        self.module = SCVITModule(
            n_input=self.summary_stats.n_vars, gene_index=torch.as_tensor(fitted.gene_index),
            n_batch=self.n_batch, n_cats_per_cov=cats, n_latent=n_latent, n_hidden=n_hidden,
            patch_size=patch_size, d_model=d_model, n_heads=n_heads, n_blocks=n_blocks, stem=stem,
            patchwise=patchwise, dropout=dropout, gene_likelihood=gene_likelihood,
            encode_covariates=encode_covariates, encoder=encoder, decoder=decoder,
        )
        order_name = gene_order if isinstance(gene_order, str) else "explicit"
        self._model_summary_string = (
            f"scViT: {self.module.n_patches} patches of {patch_size} genes ({order_name} order), "
            f"stem={stem}, d_model={d_model}, heads={n_heads}, blocks={n_blocks}, latent={n_latent}, "
            f"{gene_likelihood}, {self.n_batch} batch(es)"
        )
        self._record_init_params(locals())

    # -- training ---------------------------------------------------------------------------------
    @scattn_dsp.dedent
    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        batch_size: int | None = None,
        early_stopping: bool | None = None,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        *,
        lr: float | None = None,
        weight_decay: float | None = None,
        early_stopping_patience: int | None = None,
        restore_best_weights: bool | None = None,
        precision: str | int | None = None,
        n_epochs_kl_warmup: int | None = 400,
        cosine_annealing: bool = False,
        **trainer_kwargs,
    ) -> None:
        """Train on the evidence lower bound (AdamW).

        A drop-in for :meth:`scvi.model.SCVI.train`: the positional arguments are scVI's, in
        scVI's order (``max_epochs, accelerator, devices, train_size, validation_size,
        shuffle_set_split, load_sparse_tensor, batch_size, early_stopping,
        datasplitter_kwargs, plan_kwargs``); the others are keyword-only and named as in
        every scattn model's ``train()``.

        Parameters
        ----------
        %(train)s
        shuffle_set_split
            Shuffle the cells before splitting them (scVI's; `False`: the split follows the
            cells' order).
        load_sparse_tensor
            Hand sparse minibatches to the module as sparse tensors (scVI's).
        n_epochs_kl_warmup
            Epochs over which the KL weight rises from 0 to 1 (scVI's default, 400).
        cosine_annealing
            Cosine schedule of the learning rate over `max_epochs` (the report's). Off by
            default: at a fixed budget it left the held-out likelihood worse than a constant
            rate (``benchmarks/results/scvit.md``).

        Notes
        -----
        %(train_defaults)s

        ``max_epochs`` `None` is scVI's rule, ``min(400, round(20000 / n_cells * 400))``;
        early stopping watches the validation ELBO. A query model from
        :meth:`load_query_data` without `unfrozen` trains without weight decay, so that the
        reference's weights stay as they are.
        """
        if isinstance(accelerator, int | float) and not isinstance(accelerator, bool):
            raise TypeError(
                "SCVIT.train takes scVI's positional arguments (max_epochs, accelerator, devices, "
                f"train_size, ...); got accelerator={accelerator!r}. Pass the learning rate and "
                "weight decay by name: train(max_epochs, lr=..., weight_decay=...)."
            )
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs)
        args = self._args_of_call(self._train_defaults, locals(), n_cells=self.adata.n_obs)
        if self._frozen_query:
            args.weight_decay = 0.0  # decay would shrink the reference's batch columns, masked or not
        plan = GenerativePlan(self.module, **{
            "lr": args.lr, "weight_decay": args.weight_decay, "optimizer": "AdamW",
            "n_epochs_kl_warmup": n_epochs_kl_warmup, "cosine_annealing": cosine_annealing,
            **(plan_kwargs or {})})
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1 if args.has_validation else None)
        splitter = {"shuffle_set_split": shuffle_set_split, "load_sparse_tensor": load_sparse_tensor,
                    **(datasplitter_kwargs or {})}
        self._run_training(plan, args, accelerator=accelerator, devices=devices,
                           datasplitter_kwargs=splitter, **trainer_kwargs)
        self.module.eval()

    # -- scVI's methods on any AnnData (genes aligned by name) --------------------------------------
    @contextmanager
    def _scvi_data(self, adata: AnnData | None):
        """What every scVI method here runs on: `adata` aligned to the model's genes, the
        module in eval mode (scvi-tools' mixins leave the mode as they find it; a model fresh
        from ``load_query_data`` is still in training mode)."""
        self._check_usable()
        self.module.eval()
        with self._aligned(adata) as internal:
            yield internal

    @scattn_dsp.dedent
    def get_latent_representation(self, adata: AnnData | None = None, indices=None,
                                  give_mean: bool = True, mc_samples: int = 5000,
                                  batch_size: int | None = None, return_dist: bool = False, **kwargs):
        """The cell embedding: the posterior mean (`give_mean`) or a sample, cells x `n_latent`.

        Parameters
        ----------
        %(adata)s
        %(indices)s
        give_mean, mc_samples, return_dist
            As :meth:`scvi.model.SCVI.get_latent_representation`.
        %(batch_size)s
        """
        if give_mean and not return_dist and not kwargs:  # the posterior mean: streamed like predict
            self._check_usable()
            return self._infer(adata, indices=indices, keys=(KEYS.QZM_KEY,), batch_size=batch_size)[KEYS.QZM_KEY]
        with self._scvi_data(adata) as internal:
            return VAEMixin.get_latent_representation(
                self, internal, indices=indices, give_mean=give_mean, mc_samples=mc_samples,
                batch_size=batch_size or settings.batch_size, return_dist=return_dist, **kwargs)

    @scattn_dsp.dedent
    def get_normalized_expression(self, adata: AnnData | None = None, indices=None, **kwargs):
        """Denoised expression (the decoder's scale), as :meth:`scvi.model.SCVI.get_normalized_expression`.

        Parameters
        ----------
        %(adata)s
        %(indices)s
        **kwargs
            ``transform_batch``, ``gene_list``, ``library_size``, ``n_samples``,
            ``batch_size``, ``return_mean``, ``return_numpy``: as scVI's.

        Returns
        -------
        DataFrame (cells x genes, the registered genes in their order) or array.
        """
        with self._scvi_data(adata) as internal:
            return RNASeqMixin.get_normalized_expression(self, internal, indices=indices, **kwargs)

    def differential_expression(self, adata: AnnData | None = None, groupby: str | None = None,
                                group1=None, group2=None, **kwargs) -> pd.DataFrame:
        """Bayesian differential expression between groups of cells, as
        :meth:`scvi.model.SCVI.differential_expression` (same arguments and result).

        Parameters
        ----------
        adata
            AnnData (genes aligned by name); `None`: the model's.
        groupby
            ``adata.obs`` column with the groups.
        group1, group2
            Groups to compare (`None`: each group against the rest).
        **kwargs
            ``idx1``, ``idx2``, ``mode``, ``delta``, ``batch_correction``, ``fdr_target``...: as scVI's.
        """
        if groupby is not None and adata is not None and groupby not in adata.obs:
            raise KeyError(f"{groupby!r} is not a column of adata.obs.")
        with self._scvi_data(adata) as internal:
            if groupby is not None and internal is not self.adata:
                internal.obs[groupby] = adata.obs[groupby].to_numpy()
            return RNASeqMixin.differential_expression(self, internal, groupby=groupby,
                                                       group1=group1, group2=group2, **kwargs)

    def get_reconstruction_error(self, adata: AnnData | None = None, indices=None,
                                 batch_size: int | None = None, **kwargs) -> dict:
        """Mean negative log-likelihood of the counts given a posterior sample, per cell
        (``{"reconstruction_loss": ...}``), as scVI's."""
        with self._scvi_data(adata) as internal:
            return VAEMixin.get_reconstruction_error(self, internal, indices=indices,
                                                     batch_size=batch_size, **kwargs)

    def get_elbo(self, adata: AnnData | None = None, indices=None, batch_size: int | None = None,
                 **kwargs) -> float:
        """The evidence lower bound (negative, per cell), as scVI's ``get_elbo``."""
        with self._scvi_data(adata) as internal:
            return VAEMixin.get_elbo(self, internal, indices=indices, batch_size=batch_size, **kwargs)

    # -- new data ---------------------------------------------------------------------------------
    def _alignment_plan(self, adata: AnnData, *, min_gene_overlap: float, new_batches: bool = False):
        batch_key = self._setup_args.get("batch_key")
        if not new_batches and batch_key is not None and isinstance(adata, AnnData) and batch_key in adata.obs:
            known = pd.Index(self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
                             .categorical_mapping).astype(str)
            unseen = sorted(set(adata.obs[batch_key].astype(str)) - set(known))
            if unseen:
                raise ValueError(
                    f"adata.obs[{batch_key!r}] has batch(es) the model was not trained on: "
                    f"{', '.join(map(repr, unseen[:5]))}. Map a new batch onto the model with "
                    "`SCVIT.load_query_data(adata, model)` and train it."
                )
        return super()._alignment_plan(adata, min_gene_overlap=min_gene_overlap)

    @scattn_dsp.dedent
    def predict(self, adata: AnnData | None = None, *, key_added: str | None = None,
                inplace: bool = True, attention_top_k: int = 50, batch_size: int | None = None,
                min_gene_overlap: float = 0.5) -> EmbeddingResult | None:
        """Write the cell embedding and the attribution into `adata`.

        Parameters
        ----------
        %(adata)s
        key_added
            Prefix of every key written (default ``"scvit"``).
        inplace
            Write into `adata`; `False`: return an :class:`~scattn.model.base.EmbeddingResult`.
        attention_top_k
            Attribution weights kept per cell.
        %(batch_size)s
        min_gene_overlap
            Smallest fraction of the model's genes that `adata` must have.

        Returns
        -------
        With ``inplace=True`` `None`, and writes (``key = key_added``):

        ``adata.obsm[f"X_{key}"]``
            The posterior mean, cells x `n_latent`.
        ``adata.layers[f"{key}_attention"]``
            Sparse cells x genes: each cell's `attention_top_k` largest attribution weights
            (see Notes of :class:`SCVIT`); ``sa.tl.marker_genes_from_attention(adata,
            groupby=...)`` ranks genes from it.
        ``adata.uns[key]["params"]``
            Model class, scattn version, keys, ``attention_top_k``, what the attribution is.
        """
        return self._predict_embedding(adata, key_added=key_added, inplace=inplace,
                                       attention_top_k=attention_top_k, batch_size=batch_size,
                                       min_gene_overlap=min_gene_overlap, z_key=KEYS.QZM_KEY,
                                       params={"batch_key": self._setup_args.get("batch_key")})

    # -- reference mapping ------------------------------------------------------------------------
    @classmethod
    def prepare_query_anndata(cls, adata: AnnData, reference_model: SCVIT) -> AnnData:
        """A copy of `adata` holding exactly the reference's genes (missing ones as zero counts,
        with a warning; extra ones dropped), ready for :meth:`load_query_data`.

        Unlike scvi-tools' function of that name it never changes `adata`.
        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
        layer = reference_model._setup_args.get("layer")
        check_input(adata, layer, "counts")
        # a query's new batches are expected here (predict refuses them)
        internal = reference_model._align(adata, min_gene_overlap=0.5, new_batches=True)
        internal.obs = adata.obs.copy()
        del internal.var[internal.var.columns[0]]
        return internal

    @classmethod
    def load_query_data(cls, adata: AnnData, reference_model: SCVIT, *, unfrozen: bool | None = None):
        """scArches reference mapping: a model for new batches that starts from a trained one.

        `adata` is registered in place like the reference (same layer, batch key and
        covariates); its batches the reference lacks get new, zero-initialised columns in every
        batch-injected layer. ``model.train()`` then learns only those columns (the reference's
        weights stay as they are, weight decay is off, and batch norm uses the reference's
        statistics also while training), or every weight with `unfrozen`.

        Parameters
        ----------
        adata
            Query AnnData with the reference's genes (any order; see
            :meth:`prepare_query_anndata` when they differ) and its batch column.
        reference_model
            A trained :class:`SCVIT`.
        unfrozen
            Train every weight instead of the new batch columns only (scvi-tools' argument).
            `None`: `False`, as in scvi-tools.

        Returns
        -------
        The query model (not trained yet).
        """
        if not isinstance(reference_model, cls):
            raise TypeError(f"reference_model must be a trained {cls.__name__}, got "
                            f"{type(reference_model).__name__}.")
        reference_model._check_if_trained(warn=False, message="The reference model is not trained.")
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
        if adata is reference_model.adata:
            raise ValueError("The query is the reference model's own AnnData; pass other cells.")
        setup = reference_model._setup_args
        ref_genes = reference_model._registered_var_names
        if set(adata.var_names) != set(ref_genes) or adata.n_vars != len(ref_genes):
            check_shared_genes(ref_genes, adata.var_names, min_overlap=0.5,
                               source="reference model", target="query")
            raise ValueError(
                "The query must hold exactly the reference's genes; make it with "
                "`query = SCVIT.prepare_query_anndata(query, reference_model)` (missing genes "
                "become zero counts, extra ones are dropped)."
            )
        batch_key = setup.get("batch_key")
        for key in [batch_key, *(setup.get("categorical_covariate_keys") or [])]:
            if key is not None and key not in adata.obs:
                raise KeyError(f"The query has no adata.obs[{key!r}], a column the reference was "
                               "set up with.")
        check_input(adata, setup.get("layer"), "counts")
        labels_key = setup.get("labels_key")
        cls._register(adata, source_registry=reference_model.adata_manager.registry,
                          extend_categories=True, allow_missing_labels=True,
                          **{k: v for k, v in setup.items() if k != "labels_key"},
                          labels_key=labels_key if labels_key in adata.obs else None)
        model = cls._from_source(Source.from_model(reference_model), adata)
        if not (cls._default_unfrozen if unfrozen is None else unfrozen):
            n_ref = reference_model.n_batch
            for name, p in model.module.named_parameters():
                p.requires_grad_(name.endswith(_BATCH_WEIGHTS))
                if name.endswith(_BATCH_WEIGHTS):
                    mask = torch.zeros_like(p)
                    mask[:, n_ref:] = 1
                    p.register_hook(lambda grad, m=mask: grad * m.to(grad.device))
            for m in model.module.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    # the reference's statistics, also while training: a minibatch's own would
                    # subtract a new batch's (constant) shift and leave its columns nothing to learn
                    m.register_forward_pre_hook(_eval_mode)
            model._frozen_query = True
        model.is_trained_ = False
        model._model_summary_string += (f"; query of a reference scViT ({reference_model.n_batch} "
                                        f"batches, {model.n_batch - reference_model.n_batch} new)")
        return model

    def _reshaped_weight(self, key: str, ref: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Batch-injected layers of a query keep the reference's columns; its new batches'
        columns start at zero. Any other shape change is an error."""
        if key.endswith(_BATCH_WEIGHTS) and ref.shape[0] == value.shape[0] and ref.shape[1] < value.shape[1]:
            new = torch.zeros_like(value)
            new[:, : ref.shape[1]] = ref
            return new
        return super()._reshaped_weight(key, ref, value)
