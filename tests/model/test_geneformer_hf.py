"""Geneformer.from_huggingface: original (Hugging Face BERT) checkpoints give the same scores."""

from __future__ import annotations

import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import scattn as sa
from scattn.data import GeneVocabulary, rank_value_encode

transformers = pytest.importorskip("transformers")

N_GENES = 40
GENES = [f"ENSG{i:011d}" for i in range(N_GENES)]  # ENSG00000000000 ... ENSG00000000039
N_SPECIAL = 2  # Geneformer V1: <pad> 0, <mask> 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small random V1-style BertForMaskedLM saved as a Hugging Face directory, and its
    token and median dictionaries as pickles."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=N_SPECIAL + N_GENES, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="relu", max_position_embeddings=64, layer_norm_eps=1e-12,
        hidden_dropout_prob=0.02, attention_probs_dropout_prob=0.02, pad_token_id=0,
    )
    bert = transformers.BertForMaskedLM(config)
    with torch.no_grad():  # non-trivial biases, token types and layer norms
        for name, p in bert.named_parameters():
            if "LayerNorm" in name or name.endswith("bias") or "token_type" in name:
                p.add_(0.1 * torch.randn_like(p))
    bert.eval()
    root = tmp_path_factory.mktemp("gf")
    bert.save_pretrained(root / "model")
    tokens = {"<pad>": 0, "<mask>": 1, **{g: N_SPECIAL + i for i, g in enumerate(GENES)}}
    rng = np.random.default_rng(1)
    medians = {g: float(rng.uniform(0.5, 4.0)) for g in GENES[1:]}  # GENES[0] has none: 1.0
    with open(root / "token_dictionary.pkl", "wb") as fh:
        pickle.dump(tokens, fh)
    with open(root / "gene_median_dictionary.pkl", "wb") as fh:
        pickle.dump(medians, fh)
    return {"dir": root / "model", "bert": bert, "tokens": root / "token_dictionary.pkl",
            "medians": root / "gene_median_dictionary.pkl", "median_dict": medians}


def _counts(n_cells: int = 60, seed: int = 0, symbols: bool = False) -> ad.AnnData:
    """Counts over the vocabulary's genes in another order, minus two, plus one outside it."""
    rng = np.random.default_rng(seed)
    genes = [*GENES[2:][::-1], "ENSG99999999999"]
    x = rng.poisson(rng.gamma(1.0, 1.5, size=len(genes)), size=(n_cells, len(genes))).astype(np.float32)
    x[x.sum(1) == 0, 0] = 1
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.where(np.arange(n_cells) % 2, "a", "b"))},
                       index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame({"ensembl": genes}, index=[f"SYM{i}" for i in range(len(genes))]) if symbols \
        else pd.DataFrame(index=genes)
    return ad.AnnData(sparse.csr_matrix(x), obs=obs, var=var)


def _load(checkpoint, adata, **kwargs) -> sa.model.Geneformer:
    return sa.model.Geneformer.from_huggingface(checkpoint["dir"], adata, token_dictionary=checkpoint["tokens"],
                                                gene_median_dictionary=checkpoint["medians"], **kwargs)


def _hf_logits(bert, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        return bert(input_ids=ids, attention_mask=mask).logits


def test_same_logits_as_transformers(checkpoint):
    adata = _counts()
    sa.model.Geneformer.setup_anndata(adata)
    with pytest.warns(UserWarning, match="not in the model's vocabulary"):
        model = _load(checkpoint, adata)
    module = model.module
    assert model.is_pretrained_ and not model.is_trained_
    assert module.pooling == "mean" and module.special_tokens == ("<pad>", "<mask>")
    assert list(model.var_names_) == GENES and module.max_length == 64
    torch.manual_seed(0)
    lengths = torch.tensor([20, 7, 1, 20])
    ids = torch.randint(N_SPECIAL, N_SPECIAL + N_GENES, (4, 20))
    ids[:, 3] = 1  # a <mask> in every cell
    ids[torch.arange(20)[None, :] >= lengths[:, None]] = 0  # padding
    ours = module.masked_logits(ids, lengths)
    theirs = _hf_logits(checkpoint["bert"], ids, lengths)
    real = torch.arange(20)[None, :] < lengths[:, None]
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    # the model's own tokens of the AnnData score as in transformers too
    x = torch.as_tensor(adata.X.toarray())
    tok_ids, tok_len, _ = module.tokenize(x)
    real = torch.arange(tok_ids.shape[1])[None, :] < tok_len[:, None]
    torch.testing.assert_close(module.masked_logits(tok_ids, tok_len)[real],
                               _hf_logits(checkpoint["bert"], tok_ids, tok_len)[real], atol=1e-4, rtol=1e-4)


def test_tokens_match_rank_value_encode(checkpoint):
    adata = _counts(seed=3)
    sa.model.Geneformer.setup_anndata(adata)
    with pytest.warns(UserWarning):
        model = _load(checkpoint, adata, max_length=16)
    assert model.module.max_length == 16
    ids, lengths, _ = model.module.tokenize(torch.as_tensor(adata.X.toarray()))
    vocab = GeneVocabulary.from_token_dictionary(pickle.load(open(checkpoint["tokens"], "rb")))
    med = np.array([checkpoint["median_dict"].get(g, 1.0) for g in adata.var_names])
    ref = rank_value_encode(adata.X, vocab.ids(adata.var_names), med, max_length=16, pad_id=0)
    np.testing.assert_array_equal(lengths.numpy(), ref.lengths)
    np.testing.assert_array_equal(ids.numpy(), ref.input_ids[:, : ids.shape[1]])
    # the gene without a median was read with 1.0
    assert model.module.gene_medians[0].item() == 1.0


def test_symbols_with_gene_id_key_then_fine_tune_save_load(checkpoint, tmp_path):
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    adata = _counts(symbols=True)
    sa.model.Geneformer.setup_anndata(adata, labels_key="cell_type", gene_id_key="ensembl")
    with pytest.warns(UserWarning):
        model = sa.model.Geneformer.from_huggingface(
            checkpoint["dir"], adata,
            token_dictionary=pickle.load(open(checkpoint["tokens"], "rb")),
            gene_median_dictionary=checkpoint["median_dict"],
        )
    assert model.module.has_head and model.classes_ == ["a", "b"]
    ids = torch.randint(N_SPECIAL, N_SPECIAL + N_GENES, (2, 10))
    lengths = torch.tensor([10, 10])
    torch.testing.assert_close(model.module.masked_logits(ids, lengths),
                               _hf_logits(checkpoint["bert"], ids, lengths), atol=1e-4, rtol=1e-4)
    # starts another model, fine-tunes, saves and loads
    other = _counts(n_cells=40, seed=5, symbols=True)
    sa.model.Geneformer.setup_anndata(other, labels_key="cell_type", gene_id_key="ensembl")
    with pytest.warns(UserWarning):
        tuned = sa.model.Geneformer.from_pretrained(model, other)
    assert tuned.is_pretrained_
    tuned.train(max_epochs=1, batch_size=16)
    assert tuned.is_trained_
    tuned.save(tmp_path / "tuned")
    loaded = sa.model.Geneformer.load(tmp_path / "tuned", other)
    z0 = tuned.get_latent_representation()
    np.testing.assert_allclose(loaded.get_latent_representation(), z0, atol=1e-5)
    model.save(tmp_path / "base")
    loaded = sa.model.Geneformer.load(tmp_path / "base", adata)
    assert loaded.is_pretrained_ and list(loaded.var_names_) == GENES


def test_symbols_without_gene_id_key_names_ensembl(checkpoint):
    adata = _counts(symbols=True)
    sa.model.Geneformer.setup_anndata(adata)
    with pytest.raises(ValueError, match="Ensembl"):
        _load(checkpoint, adata)


def test_refuses_mismatched_checkpoints(checkpoint, tmp_path):
    adata = _counts()
    sa.model.Geneformer.setup_anndata(adata)
    tokens = pickle.load(open(checkpoint["tokens"], "rb"))
    with pytest.raises(ValueError, match="vocab_size"):
        sa.model.Geneformer.from_huggingface(
            checkpoint["dir"], adata, token_dictionary={**tokens, "ENSG99999999998": N_SPECIAL + N_GENES},
            gene_median_dictionary=checkpoint["medians"])
    unregistered = _counts()
    with pytest.raises(ValueError, match="Register adata first"):
        _load(checkpoint, unregistered)
    # a checkpoint missing a weight, and one whose layer norm epsilon differs
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    checkpoint["bert"].save_pretrained(bad)
    state = load_file(bad / "model.safetensors")
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, bad / "model.safetensors")
    with pytest.raises(ValueError, match="lacks 'bert.encoder.layer.1.output.dense.weight'"):
        sa.model.Geneformer.from_huggingface(bad, adata, token_dictionary=tokens,
                                             gene_median_dictionary=checkpoint["medians"])
    eps = tmp_path / "eps"
    cfg = checkpoint["bert"].config
    cfg_eps = transformers.BertConfig(**{**cfg.to_dict(), "layer_norm_eps": 1e-5})
    transformers.BertForMaskedLM(cfg_eps).save_pretrained(eps)
    with pytest.raises(ValueError, match="layer_norm_eps"):
        sa.model.Geneformer.from_huggingface(eps, adata, token_dictionary=tokens,
                                             gene_median_dictionary=checkpoint["medians"])
