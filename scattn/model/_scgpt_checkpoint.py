"""Reading original scGPT checkpoints (``args.json``, ``vocab.json``, ``best_model.pt``) into
:class:`scattn.model.SCGPT`.

The state dict is scGPT's ``TransformerModel``'s (Cui et al. 2024; ``scgpt/model/model.py``):
``encoder`` (gene embedding + layer norm), ``value_encoder`` (continuous), ``transformer_encoder
.layers.{i}`` (PyTorch's post-norm ``TransformerEncoderLayer``, or flash-attention's layer with
the same tensors under ``Wqkv``), ``decoder`` (GEP), ``mvc_decoder`` (GEPC, inner product),
``cls_decoder``, ``batch_encoder`` and ``grad_reverse_discriminator`` where trained.

Loading is strict: every tensor the architecture of ``args.json`` needs must be in the file,
every tensor of the file must be used (or be one of the known pretraining-only parts in
:data:`_IGNORED`, or a head that the model drops), shapes must agree, and ``args.json`` settings
that change the outputs in ways scattn does not implement are refused.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scattn._quiet import user_stacklevel

from .base import FittedState, weights_fingerprint

#: checkpoint prefix -> this module's prefix (per layer keys handled in `_module_key`)
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
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_LAYER_KEY = re.compile(r"^transformer_encoder\.layers\.(\d+)\.(.+)$")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
#: keys of scGPT's pretraining-only parts, not used here
_IGNORED = ("flag_encoder.",)
#: this module's parts that every scGPT TransformerModel has (``mvc_decoder`` with do_mvc)
_REQUIRED = ("gene_encoder.", "value_encoder.", "blocks.", "expression_decoder.")
#: heads: loaded when they fit the model, else dropped (the model makes its own)
_HEADS = ("classifier.", "batch_discriminator.")
#: decoders that read [state; batch or condition]: grown by zero columns for such a model
_GROWN = ("expression_decoder.fc.0.weight", "cell_decoder.W.weight")
#: names shown in errors (a few of them, then the count)
_SHOWN = 5


def _on(value) -> bool:
    """An ``args.json`` switch: `True` for true, non-zero numbers and other non-empty strings."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "none", "null", "0", "no")
    return bool(value)


def _some(keys: list[str], sep: str = ", ") -> str:
    """The first few of `keys` and how many there are."""
    shown = sep.join(keys[:_SHOWN])
    return f"{shown} (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else shown


def _refused_settings(args: Mapping) -> list[str]:
    """The ``args.json`` settings that change scGPT's outputs in ways scattn does not
    implement, each with the reason (empty: all supported)."""
    out = []
    style = args.get("input_emb_style", "continuous")
    if style != "continuous":
        out.append(f"input_emb_style={style!r} (only 'continuous' value embeddings are "
                   "implemented)")
    inputs = args.get("input_style", "binned")
    if inputs != "binned":
        out.append(f"input_style={inputs!r} (the model was trained on unbinned values; scattn's "
                   "scGPT feeds each cell's binned values, input_style 'binned')")
    cell = args.get("cell_emb_style", "cls")
    if cell != "cls":
        why = {"avg-pool": "scGPT then averages the last states over every position, <cls> and "
                           "padding included, so a cell's embedding depends on its minibatch's "
                           "padding",
               "w-pool": "scGPT then sums the last states weighted by the input values and "
                         "L2-normalises them"}.get(cell, "unknown style")
        out.append(f"cell_emb_style={cell!r} ({why}; only 'cls', the <cls> token's last state, "
                   "is implemented)")
    if _on(args.get("pre_norm", False)):
        out.append("pre_norm=true (scGPT's pre-norm layer, used with flash-attention only, "
                   "normalises the residual stream itself: x = LN1(x); x = x + attn(x); "
                   "x = LN2(x); x = x + ff(x); that is neither PyTorch's norm_first nor "
                   "post-norm, and only post-norm is implemented)")
    backend = args.get("fast_transformer_backend", "flash")
    if backend != "flash":
        out.append(f"fast_transformer_backend={backend!r} (only softmax attention, 'flash' or "
                   "PyTorch's, is implemented)")
    if _on(args.get("explicit_zero_prob", False)):
        out.append("explicit_zero_prob=true (the decoders' zero probabilities are not "
                   "implemented)")
    dsbn = args.get("domain_spec_batchnorm", False)
    if dsbn is True or dsbn in ("dsbn", "batchnorm") or _on(args.get("DSBN", False)):
        out.append("domain_spec_batchnorm/DSBN (domain-specific batch norm of the token inputs "
                   "is not implemented)")
    mvc = args.get("mvc_decoder_style", "inner product")
    if mvc != "inner product":
        out.append(f"mvc_decoder_style={mvc!r} (only the 'inner product' GEPC decoder is "
                   "implemented)")
    pad = args.get("pad_token", "<pad>")
    if pad != "<pad>":
        out.append(f"pad_token={pad!r} (scattn's scGPT pads with '<pad>')")
    return out


def read_args(model_dir: str | os.PathLike) -> dict:
    """``args.json`` of a checkpoint directory, with a clear error when it is missing or
    describes a model scattn cannot reproduce."""
    path = os.path.join(model_dir, "args.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir!r} has no args.json: not an scGPT checkpoint directory "
                                "(it needs args.json, vocab.json and best_model.pt).")
    with open(path) as f:
        args = json.load(f)
    missing = [k for k in ("embsize", "nheads", "d_hid", "nlayers") if k not in args]
    if missing:
        raise ValueError(f"args.json lacks {missing}: not an scGPT model's arguments.")
    refused = _refused_settings(args)
    if refused:
        raise ValueError(f"{path} describes an scGPT model that scattn cannot reproduce: "
                         + "; ".join(refused) + ".")
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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, EOF, disallowed globals...
        said = (str(err).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"{path} could not be read as a PyTorch state dict: the file is probably "
                         "truncated or corrupt (download it again); it is read with "
                         f"torch.load(weights_only=True). PyTorch said: {type(err).__name__}: "
                         f"{said}") from err
    if isinstance(state, Mapping) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict (names to "
                         "tensors) of scGPT's TransformerModel.")
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


def _module_key(key: str) -> str | None:
    """This module's name for checkpoint key `key` (`None`: no scGPT part scattn knows)."""
    m = _LAYER_KEY.match(key)
    if m:
        rest = _LAYER.get(m.group(2))
        return None if rest is None else f"blocks.{m.group(1)}.{rest}"
    prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
    return None if prefix is None else _PREFIXES[prefix] + key[len(prefix):]


def _checkpoint_key(name: str) -> str:
    """The checkpoint key of this module's parameter `name` (inverse of `_module_key`)."""
    m = _BLOCK_KEY.match(name)
    if m and m.group(2) in _LAYER_BACK:
        return f"transformer_encoder.layers.{m.group(1)}.{_LAYER_BACK[m.group(2)]}"
    for ckpt, ours in _PREFIXES.items():
        if name.startswith(ours):
            return ckpt + name[len(ours):]
    return name


def _layers_in(state: Mapping[str, torch.Tensor]) -> int:
    """Transformer layers in a state dict (1 + the largest layer index)."""
    found = [int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k))]
    return 1 + max(found) if found else 0


def _cause(args: Mapping, state: Mapping[str, torch.Tensor]) -> str:
    """The likely cause of a state dict that does not fit `args`."""
    n_file, n_args = _layers_in(state), int(args["nlayers"])
    layers = (f"best_model.pt holds {n_file} transformer layers, args.json says nlayers={n_args}; "
              if n_file != n_args else "")
    return (f"{layers}args.json and best_model.pt are probably from different models (or the file "
            "is not a whole TransformerModel's state dict).")


def _switched_off(args: Mapping, keys: tuple[str, ...]) -> bool:
    """Whether ``args.json`` turns a part off under any of its names."""
    return any(k in args and not _on(args[k]) for k in keys)


def module_state(state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor], args: Mapping
                 ) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under this module's names, checked against this module's
    state dict `own` (built from `args`): every tensor of the file is placed (or ignored:
    :data:`_IGNORED`; heads are placed whether or not the model has them) and every tensor the
    architecture needs is there, else a ``ValueError`` naming the keys and the likely cause."""
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state.items():
        if key.startswith(_IGNORED):
            continue
        name = _module_key(key)
        if name is None or (name not in own and not name.startswith(_HEADS)):
            unexpected.append(key)
            continue
        out[name] = value
    if unexpected:
        raise ValueError(f"best_model.pt has {len(unexpected)} tensor(s) that are no part of the "
                         f"model args.json describes: {_some(unexpected)}. {_cause(args, state)}")
    required = list(_REQUIRED)
    if not _switched_off(args, ("do_mvc", "MVC", "GEPC")):
        required.append("cell_decoder.")
    batches = _on(args.get("use_batch_labels", False))
    if batches or any(k.startswith("batch_encoder.") for k in state):
        required.append("batch_encoder.")
    missing = [_checkpoint_key(k) for k in own if k.startswith(tuple(required)) and k not in out]
    if "batch_encoder." in required and "batch_encoder.embedding.weight" not in own:
        # use_batch_labels without a batch embedding in the file (the model has no batches)
        missing += [k for k in ("batch_encoder.embedding.weight", "batch_encoder.enc_norm.weight",
                                "batch_encoder.enc_norm.bias") if k not in state]
    if missing:
        raise ValueError(f"best_model.pt lacks {len(missing)} tensor(s) that the model args.json "
                         f"describes needs: {_some(missing)}. {_cause(args, state)}")
    return out


def _check_shapes(weights: Mapping[str, torch.Tensor], want: Mapping[str, tuple[int, ...]],
                  args: Mapping, state: Mapping[str, torch.Tensor]) -> None:
    """A ``ValueError`` naming every tensor whose shape is not `want`'s."""
    wrong = [f"{_checkpoint_key(k)} {tuple(v.shape)} in the file, {tuple(want[k])} expected"
             for k, v in weights.items() if k in want and tuple(v.shape) != tuple(want[k])]
    if wrong:
        arch = ", ".join(f"{k}={args[k]}" for k in ("nlayers", "embsize", "nheads", "d_hid"))
        raise ValueError(f"{len(wrong)} tensor(s) of best_model.pt do not have the shape of the "
                         f"model args.json describes ({arch}): {_some(wrong, '; ')}. "
                         + _cause(args, state))


def _fits(weights: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], prefix: str
          ) -> bool:
    """Whether the checkpoint's head under `prefix` is complete and fits the model's."""
    theirs = {k for k in weights if k.startswith(prefix)}
    ours = {k for k in own if k.startswith(prefix)}
    return bool(ours) and theirs == ours and all(own[k].shape == weights[k].shape for k in ours)


def load_scgpt(cls, model_dir, adata: AnnData, *, max_length: int | None = None, cls_value: float = 0.0,
               keep_classifier: bool = False, min_gene_overlap: float = 0.5):
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
    GeneVocabulary(list(genes_in_vocab), specials).match(ids, min_overlap=min_gene_overlap, what="adata")
    shared = np.flatnonzero(ids.isin(genes_in_vocab))
    fitted = FittedState([str(g) for g in ids[shared]], shared)
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
    own = model.module.state_dict()
    weights = module_state(state, own, args)
    emb = "gene_encoder.embedding.weight"
    n_emb = weights[emb].shape[0]
    if n_emb != len(vocab):
        raise ValueError(f"vocab.json has {len(vocab)} tokens, the checkpoint's embedding "
                         f"{n_emb} rows.")
    # the shapes the file must have: the model's, but the embedding has the checkpoint's
    # vocabulary and decoders grown for batches or conditions the checkpoint's own width
    d = arch["d_model"]
    want = {k: tuple(v.shape) for k, v in own.items() if not k.startswith(_HEADS)}
    want[emb] = (len(vocab), d)
    grow = n_batch_ckpt == 0 and bool(model.n_batch or model.conditions_)
    if grow:
        want[_GROWN[0]] = (own[_GROWN[0]].shape[0], d)
        want[_GROWN[1]] = (d, own[_GROWN[1]].shape[1])
    _check_shapes(weights, want, args, state)
    token_rows = np.array([vocab[t] for t in specials] + [vocab[g] for g in model.var_names_])
    weights[emb] = weights[emb][torch.as_tensor(token_rows)]
    if "cell_decoder.W.weight" not in weights:
        warnings.warn("The checkpoint has no GEPC decoder (mvc_decoder; args.json turns it off): "
                      "the model's is new, so predict_response needs training first.",
                      UserWarning, stacklevel=user_stacklevel())
    # heads: the checkpoint's when it fits the model, else the model's own (new) one
    if keep_classifier and not _fits(weights, own, "classifier."):
        if not model.module.has_head:
            why = "adata has no labels registered, so the model has no cell-type head"
        elif not any(k.startswith("classifier.") for k in weights):
            why = "the checkpoint has no cell-type head (cls_decoder); a new head is used"
        else:
            why = ("the checkpoint's cell-type head does not fit adata's classes; a new head "
                   "is used")
        warnings.warn(f"keep_classifier=True, but {why}.", UserWarning, stacklevel=user_stacklevel())
    for prefix, keep in (("classifier.", keep_classifier), ("batch_discriminator.", True)):
        if not (keep and _fits(weights, own, prefix)):
            for k in [k for k in weights if k.startswith(prefix)]:
                del weights[k]
    if grow:
        # decoders that read [state; condition]: the checkpoint's columns first, the new ones 0
        for k in _GROWN:
            if k in weights:
                grown = torch.zeros_like(own[k])
                ref = weights[k]
                if k.startswith("cell_decoder"):
                    grown[: ref.shape[0]] = ref
                else:
                    grown[:, : ref.shape[1]] = ref
                weights[k] = grown
    own.update({k: v.to(own[k].dtype) for k, v in weights.items()})
    model.module.load_state_dict(own)
    model.module.eval()
    model.is_pretrained_ = True
    model.pretrained_from_ = weights_fingerprint(model.module)  # the published weights
    model._model_summary_string += f"; weights from {os.path.basename(os.path.normpath(model_dir))}"
    return model
