"""Training plans that name the objective the module is trained for."""

from __future__ import annotations

from scvi.train import TrainingPlan

from scattn.module import OBJECTIVES


class ObjectivePlan(TrainingPlan):
    """scvi-tools' :class:`~scvi.train.TrainingPlan` that tells the module which loss to use.

    The module's ``loss`` receives ``objective=self.objective`` (see
    :class:`~scattn.module.ScattnModule`); optimiser, schedule and logging are scvi-tools'.
    Subclasses set ``objective`` and may add inference arguments in
    :meth:`inference_kwargs`.

    Parameters
    ----------
    module
        A scattn module implementing the objective.
    schedule
        ``"linear"``: the learning rate rises linearly from 0 over the first `warmup_fraction`
        of the run's optimiser steps, then falls linearly to 0 (BERT's and Geneformer's
        schedule), stepped every minibatch. ``"cosine"``: annealed from ``lr`` to
        ``lr * 1e-2`` over the run's ``max_epochs`` on a cosine (Loshchilov and Hutter 2017),
        stepped every epoch. Either replaces scvi-tools' plateau schedule. `None`: scvi-tools'
        behaviour.
    warmup_fraction
        Share of the steps in warm-up (with ``schedule="linear"``).
    class_weights
        One weight per class for the classification loss (the module's loss receives them
        as ``class_weights``); `None`: unweighted.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``...).
    """

    objective: str = OBJECTIVES.CLASSIFICATION

    def __init__(self, module, *, schedule: str | None = None, warmup_fraction: float = 0.0,
                 class_weights=None, **kwargs) -> None:
        if self.objective not in getattr(module, "objectives", ()):
            raise ValueError(f"{type(module).__name__} cannot be trained for {self.objective!r}.")
        if schedule not in (None, "linear", "cosine"):
            raise ValueError(f"schedule must be None, 'linear' or 'cosine', got {schedule!r}.")
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}.")
        if schedule and kwargs.get("reduce_lr_on_plateau"):
            raise ValueError(f"Choose schedule={schedule!r} or reduce_lr_on_plateau, not both.")
        super().__init__(module, **kwargs)
        self.loss_kwargs["objective"] = self.objective
        if class_weights is not None:
            import torch

            weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
            if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
                raise ValueError("class_weights must be finite and non-negative.")
            self.loss_kwargs["class_weights"] = weights
        self.schedule = schedule
        self.warmup_fraction = warmup_fraction

    def configure_optimizers(self):
        """scvi-tools' optimiser, with the linear or cosine schedule when asked."""
        config = super().configure_optimizers()
        if self.schedule is None:
            return config
        import torch

        optimizer = config["optimizer"] if isinstance(config, dict) else config
        if self.schedule == "cosine":
            t_max = max(1, int(self.trainer.max_epochs or 1))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max,
                                                                   eta_min=self.lr * 1e-2)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(self.warmup_fraction * total)) if self.warmup_fraction else 0

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def inference_kwargs(self) -> dict:
        """Extra arguments of the module's ``inference`` in every forward pass."""
        return {}

    def compute_and_log_metrics(self, loss_output, metrics, mode: str):
        """scvi-tools' logging, with the module's extra metrics (e.g. ``accuracy``) logged
        outside inference mode.

        scvi-tools logs them inside ``torch.inference_mode``, so Lightning's running sums are
        inference tensors; under DDP on CPU (gloo) Lightning averages them across processes in
        place at the end of a training epoch, which inference tensors refuse. Logged here
        (detached, under ``no_grad``), they are averaged over all processes' cells, weighted by
        each minibatch's ``n_obs_minibatch``, as in one process.
        """
        extra = loss_output.extra_metrics
        loss_output.extra_metrics = {}
        try:
            super().compute_and_log_metrics(loss_output, metrics, mode)
        finally:
            loss_output.extra_metrics = extra
        import torch

        with torch.no_grad():
            for key, met in (extra or {}).items():
                if isinstance(met, torch.Tensor):
                    if met.dim():
                        continue  # as scvi-tools: only 0-d tensors are logged
                    met = met.detach().clone()
                self.log(f"{key}_{mode}", met, on_step=self.on_step, on_epoch=self.on_epoch,
                         batch_size=loss_output.n_obs_minibatch, sync_dist=self.use_sync_dist)

    def forward(self, *args, **kwargs):
        """The module's forward with this plan's inference arguments."""
        extra = self.inference_kwargs()
        if extra:
            kwargs["inference_kwargs"] = {**(kwargs.get("inference_kwargs") or {}), **extra}
        return super().forward(*args, **kwargs)


class ClassificationPlan(ObjectivePlan):
    """Train a classifier: cross-entropy over the labelled cells (the module's
    ``classification_loss``)."""

    objective = OBJECTIVES.CLASSIFICATION


class GenerativePlan(ObjectivePlan):
    """Train a generative model (e.g. an autoencoder) on the likelihood of the observed data
    (the module's ``generative_loss``); labels are never read.

    Parameters
    ----------
    module
        A scattn module with the generative objective.
    cosine_annealing
        Anneal the learning rate from ``lr`` to ``lr * 1e-2`` over the run's ``max_epochs``
        on a cosine (Loshchilov and Hutter 2017), stepped every epoch; replaces scvi-tools'
        plateau schedule (``schedule="cosine"`` of :class:`ObjectivePlan`).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``,
        ``optimizer="AdamW"``, ``n_epochs_kl_warmup``...).
    """

    objective = OBJECTIVES.GENERATIVE

    def __init__(self, module, *, cosine_annealing: bool = False, **kwargs) -> None:
        if cosine_annealing and kwargs.get("reduce_lr_on_plateau"):
            raise ValueError("Choose cosine_annealing or reduce_lr_on_plateau, not both.")
        if cosine_annealing:
            kwargs["schedule"] = "cosine"
        super().__init__(module, **kwargs)
        self.cosine_annealing = cosine_annealing


class MultiTaskPlan(ObjectivePlan):
    """Train a weighted sum of a module's named tasks (``module.multitask_loss``), e.g.
    scGPT's GEP, GEPC, ECS, DAR and CLS, each switched on by a positive weight.

    Every forward pass (training and validation) masks a share of the tokens when a task
    needs it (``"gep"``), drawn per minibatch from `mask_ratio` when it is a sequence (scGPT's
    pretraining draws from 0.25, 0.5 and 0.75), optionally under the generative attention mask.

    Parameters
    ----------
    module
        A module with the ``multitask`` objective (its ``TASKS`` name the tasks).
    weights
        Task -> weight; tasks with weight 0 or absent are off.
    mask_ratio
        Share of gene tokens masked, or several to draw from per minibatch.
    generative
        Masked tokens attend only to the known tokens and themselves.
    **kwargs
        Passed to :class:`ObjectivePlan` (``lr``, ``schedule``, ``weight_decay``...).
    """

    objective = OBJECTIVES.MULTITASK

    def __init__(self, module, *, weights: dict[str, float], mask_ratio: float | tuple[float, ...] = 0.4,
                 generative: bool = False, **kwargs) -> None:
        tasks = getattr(type(module), "tasks", None) or ()
        weights = {str(k): float(v) for k, v in weights.items()}
        unknown = sorted(set(weights) - set(tasks))
        if unknown:
            raise ValueError(f"{type(module).__name__} has no task {unknown}; its tasks are "
                             f"{', '.join(tasks)}.")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"Task weights must be >= 0, got {weights}.")
        if not any(weights.values()):
            raise ValueError("Give at least one task a positive weight.")
        ratios = (mask_ratio,) if isinstance(mask_ratio, int | float) else tuple(mask_ratio)
        if not ratios or not all(0 < r < 1 for r in ratios):
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}.")
        super().__init__(module, **kwargs)
        self.weights = {k: v for k, v in weights.items() if v > 0}
        self.loss_kwargs["weights"] = self.weights
        self.mask_ratios = ratios
        self.generative = generative

    def inference_kwargs(self) -> dict:
        """The tasks to compute, and the mask of this minibatch."""
        import torch

        kwargs = {"tasks": tuple(self.weights)}
        if "gep" in self.weights:
            i = int(torch.randint(len(self.mask_ratios), ())) if len(self.mask_ratios) > 1 else 0
            kwargs.update(mask_ratio=self.mask_ratios[i], generative=self.generative)
        return kwargs
