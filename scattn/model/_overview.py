"""The models side by side: what each can do (read from its mixins) and its training defaults
(read from its class attributes); the documentation's tables are generated from these."""

from __future__ import annotations

import pandas as pd

from scattn.train import defaults_table

from ._cfan import CFAN
from ._cgran import CGRAN
from ._geneformer import Geneformer
from ._scgpt import SCGPT
from ._scvit import SCVIT
from ._sims import SIMS
from .base import AttentionMixin, ClassifierMixin, LatentMixin, PretrainingMixin, QueryMixin

MODELS = {"CFAN": CFAN, "CGRAN": CGRAN, "SIMS": SIMS, "SCVIT": SCVIT, "Geneformer": Geneformer,
          "SCGPT": SCGPT}

#: published checkpoints a model reads: class method -> what it reads
_CHECKPOINTS = {"from_huggingface": "Geneformer (Hugging Face)", "from_scgpt": "scGPT"}


def capabilities() -> pd.DataFrame:
    """What every model can do, one row per model.

    Columns: ``latent`` (``get_latent_representation``), ``attention`` (a per-cell gene
    attribution, ``get_attention`` and the attention layer of ``predict``), ``classifier``
    (cell types, ``predict_proba``), ``pretraining`` (``pretrain``, ``from_pretrained``),
    ``query mapping`` (``load_query_data``), ``checkpoints`` (published weights it reads).
    Read from the mixins each model class is built from, so it cannot drift from the code.
    """
    rows = {}
    for name, cls in MODELS.items():
        rows[name] = {
            "latent": issubclass(cls, LatentMixin) or hasattr(cls, "get_latent_representation"),
            "attention": issubclass(cls, AttentionMixin),
            "classifier": issubclass(cls, ClassifierMixin),
            "pretraining": issubclass(cls, PretrainingMixin),
            "query mapping": issubclass(cls, QueryMixin) or "load_query_data" in vars(cls),
            "checkpoints": ", ".join(v for k, v in _CHECKPOINTS.items() if hasattr(cls, k)) or "-",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def capabilities_markdown() -> str:
    """:func:`capabilities` as the markdown table of the documentation."""
    table = capabilities()
    shown = table.map(lambda v: "yes" if v is True else ("-" if v is False else v))
    lines = ["| model | " + " | ".join(table.columns) + " |", "|" + "---|" * (len(table.columns) + 1)]
    lines += [f"| `{name}` | " + " | ".join(map(str, row)) + " |" for name, row in shown.iterrows()]
    return "\n".join(lines) + "\n"


def training_defaults_markdown() -> str:
    """Every model's ``train()``/``pretrain()`` defaults as the documentation's table."""
    return defaults_table(MODELS)
