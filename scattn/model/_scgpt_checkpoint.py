"""Reading original scGPT checkpoints (``args.json``, ``vocab.json``, ``best_model.pt``) into
:class:`scattn.model.SCGPT`.

The state dict is scGPT's ``TransformerModel``'s (Cui et al. 2024; ``scgpt/model/model.py``):
``encoder`` (gene embedding + layer norm), ``value_encoder`` (continuous), ``transformer_encoder
.layers.{i}`` (PyTorch's post-norm ``TransformerEncoderLayer``, or flash-attention's layer with
the same tensors under ``Wqkv``), ``decoder`` (GEP), ``mvc_decoder`` (GEPC, inner product),
``cls_decoder``, ``batch_encoder`` and ``grad_reverse_discriminator`` where trained.
"""

from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .base import FittedState

#: checkpoint prefix -> this module's prefix (per layer keys handled in `_layer_key`)
_PREFIXES = {
    "encoder.": "gene_encoder.",
    "value_encoder.": "value_encoder.",
    "decoder.fc.": "expression_decoder.fc.",
    "mvc_decoder.": "cell_decoder.",
    "batch_encoder.": "batch_encoder.",
    "grad_reverse_discriminator.": "batch_discriminator.",
    "cls_decoder.": "classifier.",
}
_LAYER = {
    "self_attn.in_proj_weight": "attention.qkv.weight",
    "self_attn.in_proj_bias": "attention.qkv.bias",
    "self_attn.out_proj.weight": "attention.out.weight",
    "self_attn.out_proj.bias": "attention.out.bias",
    "linear1.weight": "ff_in.weight",
    "linear1.bias": "ff_in.bias",
    "linear2.weight": "ff_out.weight",
    "linear2.bias": "ff_out.bias",
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
}
#: keys of scGPT's pretraining-only parts, not used here
_IGNORED = ("flag_encoder.",)


def read_args(model_dir: str | os.PathLike) -> dict:
    """``args.json`` of a checkpoint directory, with a clear error when it is missing."""
    path = os.path.join(model_dir, "args.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir!r} has no args.json: not an scGPT checkpoint directory "
                                "(it needs args.json, vocab.json and best_model.pt).")
    with open(path) as f:
        args = json.load(f)
    missing = [k for k in ("embsize", "nheads", "d_hid", "nlayers") if k not in args]
    if missing:
        raise ValueError(f"args.json lacks {missing}: not an scGPT model's arguments.")
    style = args.get("input_emb_style", "continuous")
    if style != "continuous":
        raise ValueError(f"Only input_emb_style='continuous' checkpoints are supported, got {style!r}.")
    return args


def read_vocab(model_dir: str | os.PathLike) -> dict[str, int]:
    """``vocab.json`` (``{token: id}``)."""
    path = os.path.join(model_dir, "vocab.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir!r} has no vocab.json.")
    with open(path) as f:
        vocab = json.load(f)
    ids = list(vocab.values())
    if len(set(ids)) != len(ids) or sorted(ids) != list(range(len(ids))):
        raise ValueError("vocab.json must map each token to a distinct id 0 .. n-1.")
    return {str(k): int(v) for k, v in vocab.items()}


def read_state(model_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``best_model.pt`` with attention keys renamed to PyTorch's (``Wqkv`` -> ``in_proj_``) and
    any ``module.`` prefix (distributed training) removed."""
    path = os.path.join(model_dir, "best_model.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir!r} has no best_model.pt.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        key = key.replace("self_attn._impl.Wqkv.", "self_attn.in_proj_").replace(
            "self_attn._impl.out_proj.", "self_attn.out_proj.").replace("self_attn.Wqkv.", "self_attn.in_proj_")
        out[key] = value
    unsupported = [k for k in out if k.startswith(("dsbn.", "bn.")) or "zero_logit" in k]
    if unsupported:
        raise ValueError(f"The checkpoint uses parts scattn does not implement ({unsupported[0]}...: "
                         "domain-specific batch norm or explicit zero probabilities).")
    return out


def _special(token: str) -> bool:
    return token.startswith("<") and token.endswith(">")


def module_state(state: dict[str, torch.Tensor], token_rows: np.ndarray, n_layers: int
                 ) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under this module's names; the gene embedding's rows in this
    model's token order (`token_rows`: the checkpoint id of each of its tokens)."""
    out: dict[str, torch.Tensor] = {}
    layer = re.compile(r"^transformer_encoder\.layers\.(\d+)\.(.+)$")
    for key, value in state.items():
        if key.startswith(_IGNORED):
            continue
        m = layer.match(key)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            if i >= n_layers or rest not in _LAYER:
                raise ValueError(f"Unexpected checkpoint key {key!r}.")
            out[f"blocks.{i}.{_LAYER[rest]}"] = value
            continue
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"Unexpected checkpoint key {key!r}; is this an scGPT TransformerModel?")
        out[_PREFIXES[prefix] + key[len(prefix):]] = value
    emb = "gene_encoder.embedding.weight"
    if emb not in out:
        raise ValueError("The checkpoint has no gene embedding (encoder.embedding.weight).")
    out[emb] = out[emb][torch.as_tensor(token_rows)]
    return out


def load_scgpt(cls, model_dir, adata: AnnData, *, max_length: int | None = None, cls_value: float = 0.0,
               keep_classifier: bool = False):
    """See :meth:`scattn.model.SCGPT.from_scgpt`."""
    from scattn.data import GeneVocabulary

    manager = cls._get_most_recent_anndata_manager(adata) if isinstance(adata, AnnData) else None
    if manager is None:
        raise ValueError("Register adata first: `sa.model.SCGPT.setup_anndata(adata, ...)`.")
    model_dir = os.fspath(model_dir)
    args = read_args(model_dir)
    vocab = read_vocab(model_dir)
    state = read_state(model_dir)
    for token in ("<pad>", "<cls>"):
        if token not in vocab:
            raise ValueError(f"vocab.json has no {token} token.")
    specials = sorted((t for t in vocab if _special(t)), key=vocab.get)
    genes_in_vocab = pd.Index([t for t in vocab if not _special(t)])
    ids = cls._gene_names_of(adata)
    GeneVocabulary(list(genes_in_vocab), specials).match(ids, min_overlap=0.05, what="adata")
    shared = np.flatnonzero(ids.isin(genes_in_vocab))
    fitted = FittedState([str(g) for g in ids[shared]], shared)
    n_emb = state["encoder.embedding.weight"].shape[0] if "encoder.embedding.weight" in state else None
    if n_emb != len(vocab):
        raise ValueError(f"vocab.json has {len(vocab)} tokens, the checkpoint's embedding {n_emb} rows.")
    for key, want in (("pad_value", -2), ("mask_value", -1)):
        if float(args.get(key, want)) != want:
            raise ValueError(f"args.json has {key}={args[key]}; scattn's scGPT uses {want}.")
    seq = int(args.get("max_seq_len", 1200))
    max_length = seq if max_length is None else int(max_length)
    n_batch_ckpt = state["batch_encoder.embedding.weight"].shape[0] if "batch_encoder.embedding.weight" in state else 0
    arch = dict(n_layers=int(args["nlayers"]), d_model=int(args["embsize"]), n_heads=int(args["nheads"]),
                d_ff=int(args["d_hid"]), max_length=max_length, dropout=float(args.get("dropout", 0.2)),
                n_bins=int(args.get("n_bins", 51)), n_cls_layers=int(args.get("n_layers_cls", 3)))
    model = cls(adata, **arch, cls_value=cls_value, special_tokens=specials, fitted=fitted)
    if n_batch_ckpt and model.n_batch != n_batch_ckpt:
        raise ValueError(f"The checkpoint was trained with {n_batch_ckpt} batch labels; set adata up "
                         f"with a batch_key of as many batches (it has {model.n_batch}).")
    token_rows = np.array([vocab[t] for t in specials] + [vocab[g] for g in model.var_names_])
    weights = module_state(state, token_rows, arch["n_layers"])
    own = model.module.state_dict()
    classifier = [k for k in weights if k.startswith("classifier.")]
    if classifier and not (keep_classifier and all(k in own and own[k].shape == weights[k].shape
                                                   for k in classifier)):
        if keep_classifier:
            warnings.warn("The checkpoint's cell-type head does not fit adata's classes; a new head is "
                          "used.", UserWarning, stacklevel=3)
        for k in classifier:
            del weights[k]
    if n_batch_ckpt == 0 and (model.n_batch or model.conditions_):
        # decoders that read [state; condition]: the checkpoint's columns first, the new ones 0
        for k in ("expression_decoder.fc.0.weight", "cell_decoder.W.weight"):
            if k in weights:
                grown = torch.zeros_like(own[k])
                ref = weights[k]
                if k.startswith("cell_decoder"):
                    grown[: ref.shape[0]] = ref
                else:
                    grown[:, : ref.shape[1]] = ref
                weights[k] = grown
    unknown = [k for k in weights if k not in own]
    if unknown:
        raise ValueError(f"Checkpoint weights {unknown[:3]} have no place in the model.")
    for k, v in weights.items():
        if own[k].shape != v.shape:
            raise ValueError(f"Weight {k} has shape {tuple(v.shape)} in the checkpoint, "
                             f"{tuple(own[k].shape)} in the model.")
    own.update({k: v.to(own[k].dtype) for k, v in weights.items()})
    model.module.load_state_dict(own)
    model.module.eval()
    model.is_pretrained_ = True
    model._model_summary_string += f"; weights from {os.path.basename(os.path.normpath(model_dir))}"
    return model
