"""Reading the original Geneformer checkpoints (Hugging Face ``BertForMaskedLM`` directories).

Helpers behind :meth:`scattn.model.Geneformer.from_huggingface`: Geneformer's token and median
dictionaries, the checkpoint's config and weights, and the map from Hugging Face BERT's
parameter names to :class:`scattn.module.GeneformerModule`'s (also used by the benchmarks to
copy a ``transformers`` model's weights).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from scattn._quiet import user_stacklevel
from scattn.data import GeneVocabulary

from .base import FittedState

logger = logging.getLogger(__name__)

#: the layer norm epsilon the scattn encoder uses (BERT's)
LAYER_NORM_EPS = 1e-12

_SAFETENSORS = "model.safetensors"
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_BIN = "pytorch_model.bin"
_BIN_INDEX = "pytorch_model.bin.index.json"
#: checkpoint entries with no counterpart that are safe to leave out (buffers, BERT's pooler
#: and next-sentence head, the decoder tied to the word embeddings)
_IGNORED = re.compile(r"^(bert\.embeddings\.position_ids|bert\.pooler\..*|cls\.seq_relationship\..*|"
                      r"cls\.predictions\.decoder\.(weight|bias))$")


# -- dictionaries ------------------------------------------------------------------------------
def _read_pickle(path: str | os.PathLike, what: str) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {what} at {path}.")
    with open(path, "rb") as fh:
        obj = pickle.load(fh)  # Geneformer ships its dictionaries as pickles: trusted files only
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a {what} (a dict).")
    return dict(obj)


def read_token_dictionary(token_dictionary: Mapping[str, int] | str | os.PathLike) -> dict[str, int]:
    """Geneformer's ``{token: id}`` dictionary, given as a dict or the path of its pickle.

    Parameters
    ----------
    token_dictionary
        A mapping, or the path of Geneformer's ``token_dictionary*.pkl``.

    Returns
    -------
    ``{token: id}`` with plain ``str`` keys and ``int`` ids.
    """
    if not isinstance(token_dictionary, Mapping):
        token_dictionary = _read_pickle(token_dictionary, "token dictionary")
    return {str(k): int(v) for k, v in token_dictionary.items()}


def read_gene_medians(gene_median_dictionary: Mapping[str, float] | str | os.PathLike
                      ) -> dict[str, float]:
    """Geneformer's ``{gene ID: non-zero median}`` dictionary, as a dict or the path of its pickle.

    Parameters
    ----------
    gene_median_dictionary
        A mapping, or the path of Geneformer's ``gene_median_dictionary*.pkl``.

    Returns
    -------
    ``{gene ID: median}`` with plain ``str`` keys and ``float`` values.
    """
    if not isinstance(gene_median_dictionary, Mapping):
        gene_median_dictionary = _read_pickle(gene_median_dictionary, "gene median dictionary")
    return {str(k): float(v) for k, v in gene_median_dictionary.items()}


def vocabulary_medians(vocab: GeneVocabulary, medians: Mapping[str, float],
                       present: np.ndarray | None = None) -> torch.Tensor:
    """``(genes,)`` float64 median of each vocabulary gene.

    A gene the dictionary lacks gets ``inf`` (never tokenised: its value divided by it is 0)
    when it is not `present` in the data; a gene of the data without a median is an error,
    as in Geneformer's ``TranscriptomeTokenizer`` (its ``gene_median_dict[gene]`` lookup).

    Parameters
    ----------
    vocab
        The vocabulary (its genes in token-id order).
    medians
        ``{gene ID: median}``.
    present
        ``(genes,)`` whether each vocabulary gene is among the data's genes (`None`: all are).
    """
    values = np.array([medians.get(g, np.nan) for g in vocab.genes], dtype=np.float64)
    missing = np.isnan(values)
    present = np.ones(len(values), dtype=bool) if present is None else np.asarray(present, dtype=bool)
    if (missing & present).any():
        names = vocab.genes[missing & present]
        raise ValueError(
            f"{len(names)} vocabulary genes of adata have no median in the gene median dictionary "
            f"(e.g. {', '.join(names[:3])}); Geneformer's tokeniser cannot normalise them either. "
            "Give the median dictionary that belongs to the token dictionary (Geneformer V1 and "
            "V2 ship different pairs), or drop these genes from adata."
        )
    if missing.any():
        logger.info("%d vocabulary genes absent from the data have no median; they are never "
                    "tokenised.", int(missing.sum()))
        values[missing] = np.inf
    bad = ~(values > 0) | (np.isinf(values) & ~missing)
    if bad.any():
        raise ValueError(f"The gene median dictionary has {int(bad.sum())} non-positive or "
                         f"non-finite medians (e.g. {', '.join(vocab.genes[bad][:3])}).")
    return torch.as_tensor(values, dtype=torch.float64)


def fitted_state(vocab: GeneVocabulary, adata_genes: pd.Index, n_vars: int,
                 medians: Mapping[str, float]) -> FittedState:
    """The :class:`~scattn.model.base.FittedState` of a model with `vocab`'s genes on data
    whose registered gene IDs are `adata_genes`.

    Parameters
    ----------
    vocab
        The checkpoint's vocabulary.
    adata_genes
        Registered gene IDs of the AnnData (``Geneformer._gene_names_of(adata)``).
    n_vars
        Registered gene count (the position of genes the data lack).
    medians
        ``{gene ID: median}`` (see :func:`vocabulary_medians` for genes it lacks).
    """
    pos = pd.Index(adata_genes).get_indexer(vocab.genes)
    gene_index = np.where(pos >= 0, pos, n_vars).astype(np.int64)
    return FittedState(list(vocab.genes), gene_index,
                       {"gene_medians": vocabulary_medians(vocab, medians, present=pos >= 0)})


# -- checkpoint ----------------------------------------------------------------------------------
def read_config(model_dir: str | os.PathLike) -> dict:
    """The ``config.json`` of a Hugging Face model directory, as a dict.

    Parameters
    ----------
    model_dir
        The directory.
    """
    path = os.path.join(os.fspath(model_dir), "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(model_dir)!r} has no config.json; give the directory of a "
                                "Hugging Face BertForMaskedLM checkpoint (e.g. Geneformer's gf-6L-30M-i2048).")
    with open(path) as fh:
        return json.load(fh)


def _load_file(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover - transformers depends on it
            raise ImportError(f"Reading {path} needs the `safetensors` package "
                              "(`pip install safetensors`).") from err
        return load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(model_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face model directory: ``model.safetensors`` if present, else
    ``pytorch_model.bin`` (either possibly sharded with an ``*.index.json``).

    Parameters
    ----------
    model_dir
        The directory.
    """
    model_dir = os.fspath(model_dir)
    for single, index in ((_SAFETENSORS, _SAFETENSORS_INDEX), (_BIN, _BIN_INDEX)):
        if os.path.isfile(os.path.join(model_dir, single)):
            return _load_file(os.path.join(model_dir, single))
        if os.path.isfile(os.path.join(model_dir, index)):
            with open(os.path.join(model_dir, index)) as fh:
                shards = sorted(set(json.load(fh)["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_load_file(os.path.join(model_dir, shard)))
            return state
    raise FileNotFoundError(f"{model_dir!r} holds no weights ({_SAFETENSORS} or {_BIN}).")


def architecture(config: Mapping, *, max_length: int | None = None) -> dict:
    """``Geneformer`` constructor arguments from a Hugging Face BERT config (an error for
    settings the scattn encoder does not have).

    Parameters
    ----------
    config
        The ``config.json`` contents.
    max_length
        Tokens per cell at most; `None`: ``max_position_embeddings`` (larger values are cut
        to it).
    """
    model_type = config.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"Expected a BERT checkpoint (model_type 'bert'), got {model_type!r}.")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("Only absolute position embeddings are supported, the checkpoint has "
                         f"{config['position_embedding_type']!r}.")
    if config.get("is_decoder", False) or config.get("add_cross_attention", False):
        raise ValueError("The checkpoint is a decoder; Geneformer is a BERT encoder.")
    act = config.get("hidden_act", "gelu")
    if act not in ("relu", "gelu"):
        raise ValueError(f"hidden_act {act!r} is not supported (only 'relu' and 'gelu').")
    eps = float(config.get("layer_norm_eps", LAYER_NORM_EPS))
    if not math.isclose(eps, LAYER_NORM_EPS, rel_tol=1e-6):
        raise ValueError(f"The checkpoint's layer_norm_eps is {eps:g}; the scattn encoder uses BERT's "
                         f"{LAYER_NORM_EPS:g} (Geneformer's) and reads no other value.")
    n_positions = int(config["max_position_embeddings"])
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}.")
    return dict(n_layers=int(config["num_hidden_layers"]), d_model=int(config["hidden_size"]),
                n_heads=int(config["num_attention_heads"]), d_ff=int(config["intermediate_size"]),
                max_length=min(n_positions, max_length or n_positions),
                dropout=float(config.get("hidden_dropout_prob", 0.1)),
                attention_dropout=float(config.get("attention_probs_dropout_prob", 0.1)),
                activation=act)


def _renamed(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old TensorFlow-era layer norm names (``gamma``, ``beta``) as ``weight``, ``bias``."""
    out = {}
    for key, value in state.items():
        if "LayerNorm" in key:
            key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))
        out[key] = value
    return out


def module_state_from_bert(state: Mapping[str, torch.Tensor], *, n_layers: int,
                           max_length: int) -> dict[str, torch.Tensor]:
    """Map a Hugging Face ``BertForMaskedLM`` state dict onto
    :class:`~scattn.module.GeneformerModule`'s parameter names.

    Token-type row 0 is folded into the position embeddings (the scattn encoder has no token
    types; all-zero token types add row 0 at every position); the query, key and value
    projections are stacked into the fused ``qkv``; the MLM decoder is tied to the word
    embeddings (an untied decoder that differs from them is an error).

    Parameters
    ----------
    state
        The checkpoint's weights (``bert.*`` and ``cls.predictions.*``).
    n_layers
        Encoder depth (layers beyond it are an error).
    max_length
        Positions kept (the first `max_length` position embeddings).

    Returns
    -------
    ``{module parameter name: tensor}`` for the encoder and the MLM head (no classifier, no
    fitted buffers).
    """
    state = _renamed(state)
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in state:
            raise KeyError(key)
        used.add(key)
        return state[key].detach().to(torch.float32)

    b, e, p = "bert.", "bert.embeddings.", "cls.predictions."
    out: dict[str, torch.Tensor] = {}
    try:
        word = take(f"{e}word_embeddings.weight")
        out["encoder.token_embedding.weight"] = word
        pos = take(f"{e}position_embeddings.weight")
        if pos.shape[0] < max_length:
            raise ValueError(f"The checkpoint has {pos.shape[0]} positions, fewer than max_length={max_length}.")
        token_type = take(f"{e}token_type_embeddings.weight")
        out["encoder.position_embedding.weight"] = pos[:max_length] + token_type[0]
        out["encoder.norm.weight"] = take(f"{e}LayerNorm.weight")
        out["encoder.norm.bias"] = take(f"{e}LayerNorm.bias")
        for i in range(n_layers):
            h, o = f"{b}encoder.layer.{i}.", f"encoder.blocks.{i}."
            qkv = ("query", "key", "value")
            out[f"{o}attention.qkv.weight"] = torch.cat([take(f"{h}attention.self.{n}.weight") for n in qkv])
            out[f"{o}attention.qkv.bias"] = torch.cat([take(f"{h}attention.self.{n}.bias") for n in qkv])
            for src, dst in (("attention.output.dense", "attention.out"),
                             ("attention.output.LayerNorm", "norm1"), ("intermediate.dense", "ff_in"),
                             ("output.dense", "ff_out"), ("output.LayerNorm", "norm2")):
                out[f"{o}{dst}.weight"] = take(f"{h}{src}.weight")
                out[f"{o}{dst}.bias"] = take(f"{h}{src}.bias")
        for src, dst in (("transform.dense", "dense"), ("transform.LayerNorm", "norm")):
            out[f"mlm_head.{dst}.weight"] = take(f"{p}{src}.weight")
            out[f"mlm_head.{dst}.bias"] = take(f"{p}{src}.bias")
        bias_key = f"{p}bias" if f"{p}bias" in state else f"{p}decoder.bias"
        out["mlm_head.bias"] = take(bias_key)
    except KeyError as err:
        raise ValueError(
            f"The checkpoint lacks {err.args[0]!r}: a Hugging Face BertForMaskedLM checkpoint with "
            f"{n_layers} layers and its masked-LM head is needed (a fine-tuned classifier "
            "checkpoint has no masked-LM head)."
        ) from None
    decoder = state.get(f"{p}decoder.weight")
    if decoder is not None and not (decoder.shape == word.shape and torch.equal(decoder.float(), word)):
        raise ValueError("The checkpoint's MLM decoder weight differs from its word embeddings; "
                         "the scattn head is tied to the token embeddings and cannot hold it.")
    extra_layers = [k for k in state if k.startswith(f"{b}encoder.layer.{n_layers}.")]
    if extra_layers:
        raise ValueError(f"The checkpoint has more than num_hidden_layers={n_layers} layers.")
    unused = [k for k in state if k not in used and not _IGNORED.match(k)]
    if unused:
        warnings.warn(f"{len(unused)} checkpoint entries are not used: {', '.join(unused[:5])}.",
                      UserWarning, stacklevel=user_stacklevel())
    return out


def load_into_module(module: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy `weights` (from :func:`module_state_from_bert`) into `module`, checking shapes.

    Parameters
    ----------
    module
        A :class:`~scattn.module.GeneformerModule`.
    weights
        Its encoder and MLM-head parameters by name.
    """
    state = module.state_dict()
    for key, value in weights.items():
        if key not in state:
            raise ValueError(f"The module has no parameter {key!r}.")
        if state[key].shape != value.shape:
            raise ValueError(f"Checkpoint weight for {key} has shape {tuple(value.shape)}, the model "
                             f"{tuple(state[key].shape)}.")
        state[key] = value.to(state[key].dtype)
    module.load_state_dict(state)


def special_tokens_of(vocab: GeneVocabulary, config: Mapping) -> tuple[str, ...]:
    """The vocabulary's special tokens, checked against the config (vocabulary size, padding).

    Parameters
    ----------
    vocab
        The vocabulary read from the token dictionary.
    config
        The checkpoint's config.
    """
    if int(config["vocab_size"]) != len(vocab):
        raise ValueError(f"The checkpoint's vocab_size is {config['vocab_size']}, the token dictionary "
                         f"has {len(vocab)} tokens: give the token dictionary the model was trained "
                         "with (Geneformer V1 and V2 use different dictionaries).")
    specials: Sequence[str] = vocab.special_tokens
    for needed in ("<pad>", "<mask>"):
        if needed not in specials:
            raise ValueError(f"The token dictionary has no {needed} token (special tokens: {list(specials)}).")
    pad = config.get("pad_token_id")
    if pad is not None and int(pad) != vocab.pad_id:
        raise ValueError(f"The checkpoint pads with token {pad}, the token dictionary's <pad> is "
                         f"{vocab.pad_id}.")
    return tuple(specials)
