"""Every private name of scvi-tools and Lightning that scattn uses, in one place.

scattn builds on a few internals of its dependencies that have no public equivalent (device
parsing, the distributed sampler switch, scvi-tools' quiet logger and early-stopping callback,
Lightning's device count). Nothing else in the package imports a private name of a dependency:
it imports it from here. Each name is resolved lazily, so that an upgrade that removes one
fails with an error naming it and the supported versions (``pyproject.toml``: scvi-tools
``>=1.2,<1.5``, Lightning as scvi-tools pins it), not with an ``ImportError`` deep in a
training run; ``tests/test_compat.py`` resolves every one of them.
"""

from __future__ import annotations

import importlib
from typing import Any

#: the versions of scvi-tools these names were checked against (``pyproject.toml``)
SUPPORTED = "scvi-tools >=1.2,<1.5 (with the Lightning release it requires)"

#: name used in scattn -> (module, attribute) of the private name it stands for
PRIVATE_NAMES: dict[str, tuple[str, str]] = {
    # scvi-tools
    "parse_device_args": ("scvi.model._utils", "parse_device_args"),
    "use_distributed_sampler": ("scvi.model._utils", "use_distributed_sampler"),
    "get_max_epochs_heuristic": ("scvi.model._utils", "get_max_epochs_heuristic"),
    "validate_data_split": ("scvi.dataloaders._data_splitting", "validate_data_split"),
    "LoudEarlyStopping": ("scvi.train._callbacks", "LoudEarlyStopping"),
    "SimpleLogger": ("scvi.train._logger", "SimpleLogger"),
    "trainrunner_module": ("scvi.train", "_trainrunner"),
    "SCVI_MODULE_KEYS": ("scvi.module._constants", "MODULE_KEYS"),
    # Lightning
    "AcceleratorConnector": ("lightning.pytorch.trainer.connectors.accelerator_connector",
                             "_AcceleratorConnector"),
    "IS_INTERACTIVE": ("lightning.fabric.utilities.imports", "_IS_INTERACTIVE"),
}

#: private attributes of scvi-tools' ``BaseModelClass`` read by scattn (checked by the tests)
PRIVATE_ATTRIBUTES: tuple[str, ...] = ("_per_instance_manager_store", "_setup_adata_manager_store")


def private(name: str) -> Any:
    """The dependency's object that scattn calls `name` (a key of :data:`PRIVATE_NAMES`).

    Raises
    ------
    ImportError
        When the installed scvi-tools or Lightning no longer has it, naming the private name
        and the supported versions.
    """
    module_name, attr = PRIVATE_NAMES[name]
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"scattn needs {module_name}.{attr}, which the installed version does not have; "
            f"scattn supports {SUPPORTED}. Install a supported version."
        ) from err


def parse_device_args(**kwargs):
    """scvi-tools' ``scvi.model._utils.parse_device_args``."""
    return private("parse_device_args")(**kwargs)


def use_distributed_sampler(strategy) -> bool:
    """scvi-tools' ``scvi.model._utils.use_distributed_sampler``."""
    return private("use_distributed_sampler")(strategy)


def get_max_epochs_heuristic(n_obs: int, **kwargs) -> int:
    """scvi-tools' ``scvi.model._utils.get_max_epochs_heuristic`` (scVI's epoch rule)."""
    return private("get_max_epochs_heuristic")(n_obs, **kwargs)


def validate_data_split(*args, **kwargs):
    """scvi-tools' ``scvi.dataloaders._data_splitting.validate_data_split``."""
    return private("validate_data_split")(*args, **kwargs)


def scvi_module_keys():
    """scvi-tools' ``MODULE_KEYS`` (``qz``, ``z``, ``library``, ``px``...), which scViT's
    module uses for its outputs, as scVI's."""
    return private("SCVI_MODULE_KEYS")


def manager_stores(model) -> tuple[dict, dict]:
    """The per-instance and class-level AnnData manager stores of an scvi-tools model."""
    return model._per_instance_manager_store, model._setup_adata_manager_store


def lightning_device_count(accelerator, devices) -> int:
    """How many devices Lightning's accelerator connector resolves `accelerator` and
    `devices` to."""
    _, lightning_devices, _ = parse_device_args(accelerator=accelerator, devices=devices,
                                                return_device="torch")
    connector = private("AcceleratorConnector")(accelerator=accelerator, devices=lightning_devices)
    return max(1, len(connector._parallel_devices))


def is_interactive() -> bool:
    """Whether Lightning considers this an interactive session (Jupyter, IPython)."""
    return bool(private("IS_INTERACTIVE"))
