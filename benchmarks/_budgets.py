"""Epoch budgets and cell caps of the suite's modes, shared by the suite and the scale family
(which trains its models with the default mode's caps)."""

from __future__ import annotations

# training arguments per deep model (empty: the method's own defaults). Early stopping still
# applies where the method uses it by default (scattn's models, pytorch-tabnet); scVI's cap
# is its number of epochs (scANVI itself: 20, as its tutorial). CGRAN trains at lr 1e-3 under
# a cap: the paper's 1e-4 needs ~60 epochs (measured, pbmc68k_reduced seed 0, 8 epochs:
# macro F1 0.27 at 1e-4, 0.65 at 1e-3; 0.63 after ~60 epochs at 1e-4).
BUDGETS = {
    "default": {"CGRAN": {"max_epochs": 8, "lr": 1e-3}, "CFAN": {"max_epochs": 30},
                "SIMS": {"max_epochs": 30}, "Geneformer": {"max_epochs": 15},
                "SCGPT": {"max_epochs": 15},
                "pytorch-tabnet": {"max_epochs": 25}, "scANVI": {"max_epochs": 70}},
    "quick": {"CGRAN": {"max_epochs": 2, "lr": 1e-3}, "CFAN": {"max_epochs": 5},
              "SIMS": {"max_epochs": 5}, "Geneformer": {"max_epochs": 2}, "SCGPT": {"max_epochs": 2},
              "pytorch-tabnet": {"max_epochs": 5},
              "scANVI": {"max_epochs": 10}},
    "full": {},
}
DEEP_MODELS = ("CGRAN", "CFAN", "SIMS", "Geneformer", "SCGPT", "pytorch-tabnet", "scANVI", "scViT", "scVI")  # what --max-epochs caps
MAX_CELLS = {"default": 1000, "quick": None, "full": None}
