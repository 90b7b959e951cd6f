"""The one runner every ``train()`` and ``pretrain()`` goes through: the data split, Lightning's
trainer, DDP, Ctrl+C, best weights and the step budget."""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings

from anndata import AnnData
from scvi.data import AnnDataManager
from scvi.dataloaders import DataSplitter
from scvi.train import TrainRunner

from scattn import _compat
from scattn._quiet import quiet, user_stacklevel
from scattn._settings import settings

from ._callbacks import BestValidationWeights, LastEpochWeights, restore_best_weights
from ._defaults import TrainArgs, TrainDefaults, steps_per_epoch

logger = logging.getLogger(__name__)


def _sigint_handler():
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.getsignal(signal.SIGINT)


def _restore_sigint(handler) -> None:
    if handler is not None and signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)


#: programs that Lightning's "ddp" launcher cannot run again as a training script
_NOT_A_SCRIPT = frozenset({"pytest", "_pytest", "py", "ipykernel_launcher", "ipykernel", "IPython",
                           "ipython", "jupyter", "colab_kernel_launcher"})


def _ddp_start_method(strategy) -> str | None:
    """How Lightning starts the processes of a DDP `strategy`: ``"popen"`` (it runs the
    calling program again for each other process: ``"ddp"``), ``"spawn"`` (``"ddp_spawn"``),
    ``"fork"`` (``"ddp_fork"``, ``"ddp_notebook"``); `None` for any other strategy."""
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    if isinstance(strategy, DDPStrategy):
        return getattr(strategy, "_start_method", "popen")
    if isinstance(strategy, str) and strategy in StrategyRegistry:
        entry = StrategyRegistry[strategy]
        if issubclass(entry["strategy"], DDPStrategy):
            return entry["init_params"].get("start_method", "popen")
    return None


def _with_unused_parameters(strategy, start_method: str, module):
    """A DDP `strategy` named by a plain string (``"ddp"``, ``"ddp_spawn"``, ``"ddp_notebook"``...)
    as Lightning's ``DDPStrategy(find_unused_parameters=True)`` when `module` has several
    objectives; any other as given.

    A module with several objectives leaves the parts of the others out of each loss (SIMS'
    decoder when classifying and its head when pretraining, Geneformer's and scGPT's heads of
    other tasks), and DDP without the flag stops at the second minibatch. With it, DDP walks
    the autograd graph once per step to find them (a small cost, not paid by single-objective
    modules). ``"ddp_find_unused_parameters_true"`` / ``"..._false"`` or a ``DDPStrategy``
    instance are kept as given.
    """
    if (not isinstance(strategy, str) or "find_unused_parameters" in strategy
            or len(getattr(module, "objectives", ())) < 2):
        return strategy
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(start_method=start_method, find_unused_parameters=True)


def _device_count(accelerator, devices) -> int:
    """How many devices Lightning would use for `accelerator` and `devices` on this machine
    (1 where it cannot tell: Lightning then names the problem when training starts)."""
    if devices in (1, "1"):
        return 1
    try:
        return _compat.lightning_device_count(accelerator, devices)
    except Exception:
        return 1


def _default_strategy(accelerator, devices) -> str | None:
    """The DDP strategy Lightning would choose for several `devices` without a strategy
    (``"ddp"``; ``"ddp_notebook"`` in an interactive session), named so that scvi-tools gives
    each process its share of the cells; `None` for one device."""
    if devices in ("auto", None) or _device_count(accelerator, devices) < 2:
        return None
    return "ddp_notebook" if _compat.is_interactive() else "ddp"


def n_training_processes(trainer_kwargs: dict) -> int:
    """Processes a training run with these keyword arguments (``accelerator``, ``devices``,
    ``strategy``, ``num_nodes``) splits each epoch's cells among: the devices times the nodes
    under a DDP strategy (named, or chosen for several devices), else 1. Budgets counted in
    optimiser steps per epoch use it: each process takes ``1 / n`` of the cells per epoch."""
    accelerator = trainer_kwargs.get("accelerator", "auto")
    devices = trainer_kwargs.get("devices", "auto")
    strategy = trainer_kwargs.get("strategy")
    if strategy in (None, "auto"):
        strategy = _default_strategy(accelerator, devices)
    if strategy is None or _ddp_start_method(strategy) is None:
        return 1
    return _device_count(accelerator, devices) * max(1, int(trainer_kwargs.get("num_nodes", 1) or 1))


def _distributed_early_stopping(trainer_kwargs: dict) -> None:
    """Early stopping for a DDP run, which scvi-tools' trainer switches off: Lightning's
    callback (scvi-tools' ``LoudEarlyStopping``) on the validation loss, which every process
    logs averaged over all of them, so all stop at the same epoch."""
    if not trainer_kwargs.pop("early_stopping", False):
        return
    callback = _compat.private("LoudEarlyStopping")(
        monitor=trainer_kwargs.pop("early_stopping_monitor", "elbo_validation"),
        min_delta=trainer_kwargs.pop("early_stopping_min_delta", 0.0),
        patience=trainer_kwargs.pop("early_stopping_patience", 45),
        mode=trainer_kwargs.pop("early_stopping_mode", "min"),
        warmup_epochs=trainer_kwargs.pop("early_stopping_warmup_epochs", 0),
    )
    trainer_kwargs["callbacks"] = [*(trainer_kwargs.get("callbacks") or []), callback]
    trainer_kwargs.setdefault("check_val_every_n_epoch", 1)


def _without_validation(plan, trainer_kwargs: dict, n_cells: int, train_size: float,
                        validation_size: float | None, what: str) -> None:
    """A run whose split leaves no cell for validation (a few cells, or ``train_size=1``):
    train on all of them without validation, early stopping, best-weights restoring or a
    learning rate reduced on a validation plateau, and say so once when a validation set was
    asked for (a `train_size` below 1, as by default)."""
    callbacks = trainer_kwargs.get("callbacks") or []
    best = [c for c in callbacks if isinstance(c, BestValidationWeights)]
    plateau = bool(getattr(plan, "reduce_lr_on_plateau", False)) and "validation" in str(
        getattr(plan, "lr_scheduler_metric", ""))
    if ((1 - train_size) if validation_size is None else validation_size) > 0:
        off = ["validation"]
        off += ["early stopping"] if trainer_kwargs.get("early_stopping") else []
        off += ["restoring the best weights"] if best else []
        off += ["learning-rate reduction on a plateau"] if plateau else []
        logger.warning(
            "%s: %d cells leave none for validation (train_size=%s, validation_size=%s), so the "
            "model trains on all of them without %s.", what, n_cells, train_size, validation_size,
            " or ".join([", ".join(off[:-1]), off[-1]]) if len(off) > 1 else off[0],
        )
    if plateau:
        plan.reduce_lr_on_plateau = False
    trainer_kwargs["early_stopping"] = False
    trainer_kwargs["callbacks"] = [c for c in callbacks if c not in best]
    trainer_kwargs["check_val_every_n_epoch"] = None
    trainer_kwargs["limit_val_batches"] = 0


def _logged_epochs(history) -> int:
    """Epochs in a model's history (rows of ``train_loss``; 0 without one)."""
    if isinstance(history, dict) and "train_loss" in history:
        return len(history["train_loss"])
    return 0



class TrainingRunnerMixin:
    """Training runs for a scattn model: :meth:`_run_training` (the one entry every
    ``train()``/``pretrain()`` uses), :meth:`_run_plan` and what they share.

    A model declares its defaults as :class:`~scattn.train.TrainDefaults` class attributes
    (``_train_defaults``; ``_pretrain_defaults`` with pretraining); arguments left at `None`
    take them.
    """

    _train_defaults: TrainDefaults | None = None
    _pretrain_defaults: TrainDefaults | None = None

    def _training_args(self, defaults: TrainDefaults, *, n_cells: int, trainer_kwargs: dict,
                       batch_size_rule=None, drop_last=None, **given) -> TrainArgs:
        """The run's arguments: `given` over `defaults`, checked, the batch size fixed
        (`batch_size_rule(n_cells, args, n_processes)` for a :class:`~scattn.train.Rule`, else
        :attr:`scattn.settings.batch_size`), and step budgets turned into epochs for the
        optimiser steps each of the run's processes makes per epoch (`drop_last(args,
        n_processes)`: whether the last short minibatch is dropped)."""
        args = TrainArgs.of(defaults, **given)
        if not 0 < args.train_size <= 1:
            raise ValueError(f"train_size must be in (0, 1], got {args.train_size}.")
        if args.validation_size is not None and not 0 <= args.validation_size < 1:
            raise ValueError(f"validation_size must be in [0, 1), got {args.validation_size}.")
        procs = n_training_processes(trainer_kwargs)
        if not isinstance(args.batch_size, int):
            args.batch_size = (batch_size_rule(n_cells, args, procs) if batch_size_rule is not None
                               else settings.batch_size)
        if args.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {args.batch_size}.")
        drop = bool(drop_last(args, procs)) if drop_last is not None else False
        args.resolve_budgets(steps_per_epoch(n_cells, args.train_size, args.validation_size,
                                             args.batch_size, n_processes=procs, drop_last=drop))
        if not isinstance(args.max_epochs, int):
            raise ValueError(f"{type(self).__name__}: no rule resolves max_epochs={args.max_epochs}.")
        return args

    def _args_of_call(self, defaults: TrainDefaults, call: dict, *, n_cells: int, **rules) -> TrainArgs:
        """:meth:`_training_args` for a ``train()``/``pretrain()`` call whose arguments are
        `call` (its ``locals()``): the shared arguments by name, the process count from its
        ``accelerator``, ``devices`` and ``trainer_kwargs``."""
        given = {f: call.get(f) for f in TrainArgs.__dataclass_fields__}
        run = {"accelerator": call.get("accelerator", "auto"), "devices": call.get("devices", "auto"),
               **(call.get("trainer_kwargs") or {})}
        return self._training_args(defaults, n_cells=n_cells, trainer_kwargs=run, **rules, **given)

    def _run_training(self, plan, args: TrainArgs, *, adata: AnnData | None = None,
                      accelerator="auto", devices="auto", datasplitter_kwargs: dict | None = None,
                      what: str = "train()", **trainer_kwargs) -> int:
        """Run `plan` with the resolved `args` (:meth:`_training_args`): progress bar, seed,
        early stopping, best weights, precision; then :meth:`_run_plan`. Returns the number of
        epochs that finished."""
        has_validation = self._prepare_training(args.max_epochs, args.train_size, args.validation_size,
                                                args.early_stopping, args.early_stopping_patience,
                                                trainer_kwargs)
        if has_validation and args.restore_best_weights:
            restore_best_weights(trainer_kwargs)
        if args.precision is not None:
            trainer_kwargs["precision"] = args.precision
        return self._run_plan(plan, adata=adata, max_epochs=args.max_epochs, batch_size=args.batch_size,
                              train_size=args.train_size, validation_size=args.validation_size,
                              accelerator=accelerator, devices=devices,
                              datasplitter_kwargs=datasplitter_kwargs, what=what, **trainer_kwargs)

    @staticmethod
    def _prepare_training(max_epochs: int, train_size: float, validation_size: float | None,
                          early_stopping: bool, early_stopping_patience: int, trainer_kwargs: dict) -> bool:
        """Checks and settings every training run shares; return whether there is a validation set.

        Fills `trainer_kwargs` (progress bar, early stopping on the validation loss) and seeds
        scvi-tools from :attr:`scattn.settings.seed`.
        """
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        if not 0 < train_size <= 1:
            raise ValueError(f"train_size must be in (0, 1], got {train_size}.")
        has_validation = ((1 - train_size) if validation_size is None else validation_size) > 0
        trainer_kwargs.setdefault("enable_progress_bar", settings.progress_bar)
        trainer_kwargs["early_stopping"] = bool(trainer_kwargs.get("early_stopping", early_stopping)
                                                and has_validation)
        if trainer_kwargs["early_stopping"]:
            trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
            trainer_kwargs.setdefault("early_stopping_patience", early_stopping_patience)
        if settings.seed is not None:
            import scvi

            with quiet():
                scvi.settings.seed = settings.seed
        return has_validation

    def _run_plan(self, plan, *, adata: AnnData | None = None, max_epochs: int, batch_size: int,
                  train_size: float, validation_size: float | None, accelerator: str = "auto",
                  devices="auto", datasplitter_kwargs: dict | None = None,
                  what: str = "train()", **trainer_kwargs) -> int:
        """Train `plan` (any objective) on `adata` (registered with this model; `None`: its
        own) with scvi-tools' data splitter and runner; return the number of epochs that
        finished. `trainer_kwargs` must have been through :meth:`_prepare_training`.

        Ctrl+C keeps the weights of the last finished epoch (with a warning; `what` names the
        call in it) and marks the model trained; before the first epoch ends it restores the
        weights it started from.

        Several processes (Lightning's DDP: ``strategy="ddp"`` and its variants, or several
        `devices` without a strategy, which becomes ``"ddp"``): each process trains on its share
        of every epoch's cells (scvi-tools' distributed sampler), `batch_size` cells per process
        and minibatch; early stopping (which scvi-tools' trainer drops under DDP) is Lightning's
        callback on the validation loss averaged over the processes; the history is kept in
        rank 0 (other ranks get ``{}``); `Ctrl+C` keeps rank 0's last finished epoch as above.
        :meth:`_check_distributed` refuses, before any process starts, a run that cannot work."""
        import tempfile

        if trainer_kwargs.get("strategy") in (None, "auto"):
            strategy = _default_strategy(accelerator, devices)
            if strategy is not None:
                trainer_kwargs["strategy"] = strategy
        start_method = _ddp_start_method(trainer_kwargs.get("strategy"))
        manager = self.adata_manager if adata is None else self.get_anndata_manager(adata)
        splitter_kwargs = {"shuffle_set_split": True, "load_sparse_tensor": False,
                           **(datasplitter_kwargs or {})}
        splitter = self._make_splitter(
            manager, train_size=train_size, validation_size=validation_size, batch_size=batch_size,
            distributed_sampler=_compat.use_distributed_sampler(trainer_kwargs.get("strategy", None)),
            **splitter_kwargs,
        )
        if splitter.n_val == 0:
            _without_validation(plan, trainer_kwargs, manager.adata.n_obs, train_size, validation_size, what)
        log_dir = None
        if start_method is not None:
            self._check_distributed(trainer_kwargs["strategy"], start_method)
            trainer_kwargs["strategy"] = _with_unused_parameters(trainer_kwargs["strategy"], start_method,
                                                                 plan.module)
            if trainer_kwargs.get("logger") is None and not trainer_kwargs.get("log_save_dir"):
                # scvi-tools' logger of a DDP run writes the history to disk (by default under
                # the cwd), for a main process whose workers were spawned or forked to read back
                if start_method == "popen":  # this process is rank 0 or a worker: in memory
                    trainer_kwargs["logger"] = _compat.private("SimpleLogger")()
                else:  # into a folder of ours, removed when the run ends
                    log_dir = trainer_kwargs["log_save_dir"] = tempfile.mkdtemp(prefix="scattn-ddp-")
            _distributed_early_stopping(trainer_kwargs)
        snapshot = LastEpochWeights()
        trainer_kwargs["callbacks"] = [*(trainer_kwargs.get("callbacks") or []), snapshot]
        logged_before = _logged_epochs(self.history_ if self.is_trained_ else None)
        # inference leaves the module in eval mode and Lightning keeps modes as it finds them:
        # without this, dropout would stay off when training follows a prediction
        self.module.train()
        finished = False
        try:
            with quiet(), warnings.catch_warnings():  # Lightning's banners come when the trainer is made
                # scattn puts early stopping back under DDP (see _distributed_early_stopping)
                warnings.filterwarnings("ignore", message="early_stopping was automatically disabled",
                                        category=UserWarning)
                runner = TrainRunner(self, training_plan=plan, data_splitter=splitter,
                                     max_epochs=max_epochs, accelerator=accelerator, devices=devices,
                                     **trainer_kwargs)
            sigint = _sigint_handler()
            try:
                with quiet():
                    runner()
                finished = True
            except (KeyboardInterrupt, SystemExit) as err:
                # Lightning turns Ctrl+C into SystemExit(1) raised while handling the KeyboardInterrupt
                if not isinstance(err, KeyboardInterrupt) and not isinstance(err.__context__, KeyboardInterrupt):
                    raise
                self._after_interrupt(snapshot, runner, what)
            finally:
                _restore_sigint(sigint)  # Lightning leaves Ctrl+C ignored after an interruption
        finally:
            if log_dir is not None:
                import shutil

                shutil.rmtree(log_dir, ignore_errors=True)
        epochs = snapshot.epochs
        if start_method is not None and finished:
            if not epochs:
                # spawned or forked workers trained; this process got rank 0's weights and
                # history back, but not the callback's count
                epochs = max(0, _logged_epochs(self.history_) - logged_before) or 1
            # scvi-tools moves every process's model to the first device; keep each on its own
            self.to_device(runner.trainer.strategy.root_device)
        return epochs

    def _check_distributed(self, strategy, start_method: str) -> None:
        """A clear error, before any process starts, for a DDP run that cannot work.

        ``strategy="ddp"`` (`start_method` ``"popen"``) makes Lightning run the program that
        called ``train`` again for every other process: that must be a script, not pytest, a
        notebook kernel or ``python -c``. A model that cannot be trained by several processes
        overrides this to say so (and calls it)."""
        if start_method != "popen" or "LOCAL_RANK" in os.environ:
            return  # workers Lightning spawns or forks; or a process Lightning/torchrun started
        import sys

        import __main__

        spec = getattr(__main__, "__spec__", None)
        main_file = getattr(__main__, "__file__", None)
        program = (spec.name if spec is not None else os.path.basename(main_file or "")).split(".")[0]
        if main_file is None or program in _NOT_A_SCRIPT:
            shown = " ".join(sys.argv) or "an interactive session"
            raise ValueError(
                f"strategy={strategy!r} starts the other processes by running this program again "
                f"(here: {shown!r}), which works only from a training script (`python train.py`), "
                "not from pytest, a notebook or `python -c`. Call train() from a script, or use "
                "strategy='ddp_notebook' (Jupyter: forked processes, CPU or GPUs not yet used in "
                "the notebook) or strategy='ddp_spawn' (a script whose code runs under "
                "`if __name__ == \"__main__\":`)."
            )

    def _make_splitter(self, manager: AnnDataManager, **kwargs) -> DataSplitter:
        """The data splitter of a training run (scvi-tools'; token models group cells by length)."""
        return DataSplitter(manager, **kwargs)

    def _after_interrupt(self, snapshot: LastEpochWeights, runner, what: str) -> None:
        """Keep the weights of the last finished epoch and say so."""
        self.module.eval()
        if snapshot.state is None:
            warnings.warn(f"{what} was interrupted before its first epoch finished; the model is "
                          f"as it was before {what}.", UserWarning, stacklevel=user_stacklevel())
            if snapshot.initial is not None:
                self.module.load_state_dict(snapshot.initial)
            return
        self.module.load_state_dict(snapshot.state)
        self.is_trained_ = True
        self.trainer = runner.trainer
        self.train_indices = getattr(runner.data_splitter, "train_idx", None)
        self.validation_indices = getattr(runner.data_splitter, "val_idx", None)
        self.test_indices = getattr(runner.data_splitter, "test_idx", None)
        warnings.warn(
            f"{what} was interrupted; the model keeps the weights of epoch {snapshot.epochs} (the "
            f"last one that finished). Call {what} again to continue.", UserWarning, stacklevel=user_stacklevel(),
        )

