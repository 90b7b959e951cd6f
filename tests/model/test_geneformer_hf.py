"""Geneformer.from_huggingface: original (Hugging Face BERT) checkpoints give the same tokens,
scores and cell embeddings as Geneformer's own code.

The references are written here from Geneformer's source (``geneformer/tokenizer.py``:
``TranscriptomeTokenizer.tokenize_anndata``, ``rank_genes``, ``create_dataset``;
``geneformer/emb_extractor.py``: ``get_embs``; ``perturber_utils.mean_nonpadding_embs``), on
tiny random ``BertForMaskedLM`` checkpoints of the V1 layout (``<pad>``, ``<mask>``) and the
V2 layout (``<pad>``, ``<mask>``, ``<cls>``, ``<eos>``).
"""

from __future__ import annotations

import pickle
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import scattn as sa
from scattn.data import GeneVocabulary, rank_value_encode
from scattn.module import MODULE_KEYS

transformers = pytest.importorskip("transformers")

N_GENES = 40
GENES = [f"ENSG{i:011d}" for i in range(N_GENES)]  # ENSG00000000000 ... ENSG00000000039
OUTSIDE = "ENSG99999999999"  # a gene of the data outside every vocabulary
N_SPECIAL = 2  # Geneformer V1: <pad> 0, <mask> 1
V2_SPECIALS = ("<pad>", "<mask>", "<cls>", "<eos>")
V2_POSITIONS = 24  # V2 cells: <cls>, at most 22 genes, <eos>


def _save_checkpoint(root, *, specials, n_layers, act, positions, medians, seed) -> dict:
    """A random BertForMaskedLM with non-trivial biases, token types and layer norms, saved as
    a Hugging Face directory, and its token and median dictionaries as pickles."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(specials) + N_GENES, hidden_size=32, num_hidden_layers=n_layers,
        num_attention_heads=4, intermediate_size=64, hidden_act=act,
        max_position_embeddings=positions, layer_norm_eps=1e-12, hidden_dropout_prob=0.02,
        attention_probs_dropout_prob=0.02, pad_token_id=0,
    )
    bert = transformers.BertForMaskedLM(config)
    with torch.no_grad():
        for name, p in bert.named_parameters():
            if "LayerNorm" in name or name.endswith("bias") or "token_type" in name:
                p.add_(0.1 * torch.randn_like(p))
    bert.eval()
    bert.save_pretrained(root / "model")
    tokens = {**{t: i for i, t in enumerate(specials)},
              **{g: len(specials) + i for i, g in enumerate(GENES)}}
    with open(root / "token_dictionary.pkl", "wb") as fh:
        pickle.dump(tokens, fh)
    with open(root / "gene_median_dictionary.pkl", "wb") as fh:
        pickle.dump(medians, fh)
    return {"dir": root / "model", "bert": bert, "tokens": root / "token_dictionary.pkl",
            "token_dict": tokens, "medians": root / "gene_median_dictionary.pkl", "median_dict": medians}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """V1 layout, relu, 2 layers, 64 positions; GENES[0] has no median (and no data has it)."""
    rng = np.random.default_rng(1)
    medians = {g: float(rng.uniform(0.5, 4.0)) for g in GENES[1:]}
    return _save_checkpoint(tmp_path_factory.mktemp("gf1"), specials=("<pad>", "<mask>"), n_layers=2,
                            act="relu", positions=64, medians=medians, seed=0)


@pytest.fixture(scope="module")
def checkpoint_v2(tmp_path_factory):
    """V2 layout (<cls>, <eos>), gelu, 3 layers, 24 positions; every gene has a median."""
    rng = np.random.default_rng(2)
    medians = {g: float(rng.uniform(0.5, 4.0)) for g in GENES}
    return _save_checkpoint(tmp_path_factory.mktemp("gf2"), specials=V2_SPECIALS, n_layers=3,
                            act="gelu", positions=V2_POSITIONS, medians=medians, seed=1)


def _counts(n_cells: int = 60, seed: int = 0, symbols: bool = False, genes=None) -> ad.AnnData:
    """Counts over the vocabulary's genes in another order, minus two, plus one outside it;
    cells of different depths (some express more genes than a V2 cell holds)."""
    rng = np.random.default_rng(seed)
    genes = [*GENES[2:][::-1], OUTSIDE] if genes is None else genes
    rates = rng.gamma(1.0, 1.5, size=len(genes)) * rng.uniform(0.3, 3.0, size=(n_cells, 1))
    x = rng.poisson(rates).astype(np.float32)
    x[x.sum(1) == 0, 0] = 1
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.where(np.arange(n_cells) % 2, "a", "b"))},
                       index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame({"ensembl": genes}, index=[f"SYM{i}" for i in range(len(genes))]) if symbols \
        else pd.DataFrame(index=genes)
    return ad.AnnData(sparse.csr_matrix(x), obs=obs, var=var)


def _load(checkpoint, adata, **kwargs) -> sa.model.Geneformer:
    return sa.model.Geneformer.from_huggingface(checkpoint["dir"], adata, token_dictionary=checkpoint["tokens"],
                                                gene_median_dictionary=checkpoint["medians"], **kwargs)


def _setup(adata, **kwargs) -> ad.AnnData:
    sa.model.Geneformer.setup_anndata(adata, **kwargs)
    return adata


# -- Geneformer's own code, re-implemented ------------------------------------------------------
def geneformer_tokenize(adata: ad.AnnData, token_dict: dict, median_dict: dict, *,
                        model_input_size: int, special_token: bool) -> list[list[int]]:
    """``TranscriptomeTokenizer(model_input_size=..., special_token=...)`` on `adata`
    (``tokenize_anndata`` then ``create_dataset``'s truncation, geneformer/tokenizer.py)."""
    ensembl = np.asarray(adata.var_names)
    loc = np.where([g in token_dict for g in ensembl])[0]  # genelist_dict: the token dictionary
    norm_factor_vector = np.array([median_dict[g] for g in ensembl[loc]])  # KeyError if missing
    tokens = np.array([token_dict[g] for g in ensembl[loc]])
    x = adata.X.toarray()
    n_counts = x.sum(axis=1)[:, None]  # no obs["n_counts"]: summed over every gene
    x_norm = sparse.csr_matrix(x[:, loc] / n_counts * 10_000 / norm_factor_vector)
    cells = []
    for i in range(x_norm.shape[0]):
        data, cols = x_norm[i].data, x_norm[i].indices
        # rank_genes: np.argsort(-v), an unstable sort; the data here has no ties
        assert len(np.unique(data)) == len(data), "the reference is defined only without ties"
        ids = tokens[cols][np.argsort(-data)]
        if special_token:  # truncate to leave space for <cls> and <eos>
            ids = [token_dict["<cls>"], *ids[: model_input_size - 2], token_dict["<eos>"]]
        else:
            ids = list(ids[:model_input_size])
        cells.append([int(t) for t in ids])
    return cells


def geneformer_embs(bert, cells: list[list[int]], *, emb_mode: str, emb_layer: int,
                    special_token: bool) -> torch.Tensor:
    """``EmbExtractor(emb_mode=..., emb_layer=...)``'s cell embeddings of tokenised cells
    (geneformer/emb_extractor.py ``get_embs``)."""
    lengths = torch.tensor([len(c) for c in cells])
    ids = torch.zeros(len(cells), int(lengths.max()), dtype=torch.long)  # <pad> 0
    for i, c in enumerate(cells):
        ids[i, : len(c)] = torch.tensor(c)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()  # gen_attention_mask
    with torch.no_grad():
        out = bert(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    layer_to_quant = bert.config.num_hidden_layers + emb_layer  # quant_layers(model) + emb_layer
    embs = out.hidden_states[layer_to_quant]
    if emb_mode == "cls":
        return embs[:, 0, :]
    if special_token:  # "cell" with <cls> and <eos>: mean over the genes only
        embs, lengths = embs[:, 1:, :], lengths - 2
    keep = torch.arange(embs.shape[1])[None, :] < lengths[:, None]  # mean_nonpadding_embs
    return (embs * keep[..., None]).sum(1) / lengths[:, None].float()


def _hf_logits(bert, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        return bert(input_ids=ids, attention_mask=mask).logits


def _padded(cells: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(cells), width), dtype=np.int64)
    for i, c in enumerate(cells):
        out[i, : len(c)] = c
    return out


# -- V1 -----------------------------------------------------------------------------------------
def test_same_logits_as_transformers(checkpoint):
    adata = _setup(_counts())
    with pytest.warns(UserWarning, match="not in the model's vocabulary"):
        model = _load(checkpoint, adata)
    module = model.module
    assert model.is_pretrained_ and not model.is_trained_
    assert module.pooling == "mean" and module.special_tokens == ("<pad>", "<mask>")
    assert module.emb_layer == -1 and module.eos_id is None
    assert list(model.var_names_) == GENES and module.max_length == 64
    torch.manual_seed(0)
    lengths = torch.tensor([20, 7, 1, 20])
    ids = torch.randint(N_SPECIAL, N_SPECIAL + N_GENES, (4, 20))
    ids[:, 3] = 1  # a <mask> in every cell
    ids[torch.arange(20)[None, :] >= lengths[:, None]] = 0  # padding
    ours = module.masked_logits(ids, lengths)
    theirs = _hf_logits(checkpoint["bert"], ids, lengths)
    real = torch.arange(20)[None, :] < lengths[:, None]
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)
    # the model's own tokens of the AnnData score as in transformers too
    x = torch.as_tensor(adata.X.toarray())
    tok_ids, tok_len, _ = module.tokenize(x)
    real = torch.arange(tok_ids.shape[1])[None, :] < tok_len[:, None]
    torch.testing.assert_close(module.masked_logits(tok_ids, tok_len)[real],
                               _hf_logits(checkpoint["bert"], tok_ids, tok_len)[real], atol=1e-5, rtol=1e-5)


def test_v1_tokens_and_embeddings_are_geneformers(checkpoint):
    adata = _setup(_counts(seed=3))
    with pytest.warns(UserWarning):
        model = _load(checkpoint, adata, max_length=16)
    assert model.module.max_length == 16
    ref = geneformer_tokenize(adata, checkpoint["token_dict"], checkpoint["median_dict"],
                              model_input_size=16, special_token=False)
    assert max(map(len, ref)) == 16 and min(map(len, ref)) < 16  # truncated and short cells
    ids, lengths, _ = model.module.tokenize(torch.as_tensor(adata.X.toarray()))
    np.testing.assert_array_equal(lengths.numpy(), [len(c) for c in ref])
    np.testing.assert_array_equal(ids.numpy(), _padded(ref, ids.shape[1]))
    # the file tokeniser gives the same tokens
    vocab = GeneVocabulary.from_token_dictionary(checkpoint["token_dict"])
    med = np.array([checkpoint["median_dict"].get(g, np.inf) for g in adata.var_names])
    enc = rank_value_encode(adata.X, vocab.ids(adata.var_names), med, max_length=16, pad_id=0)
    np.testing.assert_array_equal(enc.input_ids, _padded(ref, 16))
    # V1's cell embedding: EmbExtractor(emb_mode="cell"), emb_layer -1 by default, or 0
    for layer in (None, 0):
        z = model.get_latent_representation(emb_layer=layer)
        theirs = geneformer_embs(checkpoint["bert"], ref, emb_mode="cell",
                                 emb_layer=-1 if layer is None else layer, special_token=False)
        np.testing.assert_allclose(z, theirs.numpy(), atol=1e-5, rtol=1e-5)
    # the vocabulary gene without a median (absent from adata) is never tokenised
    assert np.isinf(model.module.gene_medians[0].item())


def test_symbols_with_gene_id_key_then_fine_tune_save_load(checkpoint, tmp_path):
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    adata = _setup(_counts(symbols=True), labels_key="cell_type", gene_id_key="ensembl")
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
                               _hf_logits(checkpoint["bert"], ids, lengths), atol=1e-5, rtol=1e-5)
    # starts another model, fine-tunes, saves and loads
    other = _setup(_counts(n_cells=40, seed=5, symbols=True), labels_key="cell_type", gene_id_key="ensembl")
    with pytest.warns(UserWarning):
        tuned = sa.model.Geneformer.from_pretrained(model, other)
    assert tuned.is_pretrained_ and tuned.module.emb_layer == -1
    tuned.train(max_epochs=1, batch_size=16)
    assert tuned.is_trained_
    tuned.save(tmp_path / "tuned")
    loaded = sa.model.Geneformer.load(tmp_path / "tuned", other)
    z0 = tuned.get_latent_representation()
    np.testing.assert_allclose(loaded.get_latent_representation(), z0, atol=1e-5)
    model.save(tmp_path / "base")
    loaded = sa.model.Geneformer.load(tmp_path / "base", adata)
    assert loaded.is_pretrained_ and list(loaded.var_names_) == GENES
    assert loaded.module.emb_layer == -1  # the embedding layer is saved with the model
    torch.testing.assert_close(loaded.module.medians_float64(), model.module.medians_float64())


def test_symbols_without_gene_id_key_names_ensembl(checkpoint):
    adata = _setup(_counts(symbols=True))
    with pytest.raises(ValueError, match="Ensembl"):
        _load(checkpoint, adata)


def test_genes_without_a_median(checkpoint):
    # a gene of adata without a median: Geneformer's tokeniser fails on it (KeyError)
    adata = _setup(_counts(genes=[*GENES, OUTSIDE]))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="1 vocabulary genes of adata have no median"):
        _load(checkpoint, adata)
    # a model built without that gene, moved to data holding it, never tokenises it
    base = _setup(_counts())
    with pytest.warns(UserWarning):
        model = _load(checkpoint, base)
    with pytest.warns(UserWarning):
        moved = sa.model.Geneformer.from_pretrained(model, adata)
    x = torch.as_tensor(adata.X.toarray())
    assert x[:, 0].sum() > 0
    ids = moved.module.tokenize(x)[0]
    assert not (ids == N_SPECIAL + 0).any() and (ids == N_SPECIAL + 1).any()
    # ... and says so: the gene is not read (dropped with a warning), a cell expressing only
    # it has no tokens and gets NaN, not an embedding of nothing passed off as a cell
    assert GENES[0] not in moved._read_genes and GENES[1] in moved._read_genes
    only = adata[:2].copy()
    only.X = sparse.csr_matrix(np.eye(2, only.n_vars, dtype=np.float32) * 5)  # cell 0: GENES[0]
    with pytest.warns(UserWarning) as got:
        z = moved.get_latent_representation(only)
    said = " ".join(str(w.message) for w in got)
    assert "2 of the 41 genes" in said and "1 cells have no counts" in said  # the gene, OUTSIDE
    assert np.isnan(z[0]).all() and np.isfinite(z[1]).all()


def test_ties_come_in_token_id_order_whatever_the_gene_order(checkpoint):
    """Geneformer's np.argsort(-v) (an unstable sort) leaves the order of equal values to
    NumPy's sorting code, which differs between machines; scattn orders them by token id."""
    adata = _setup(_counts(seed=7))
    equal = {g: 1.0 for g in GENES}  # every gene the same median: equal counts tie
    with pytest.warns(UserWarning):
        model = sa.model.Geneformer.from_huggingface(checkpoint["dir"], adata, token_dictionary=checkpoint["tokens"],
                                                     gene_median_dictionary=equal)
    x = adata.X.toarray()
    ids, lengths, genes = model.module.tokenize(torch.as_tensor(x))
    gene_pos = pd.Index(adata.var_names).get_indexer(GENES)
    for i in range(len(x)):
        cell = ids[i, : lengths[i]].numpy()
        counts = np.array([x[i, gene_pos[t - N_SPECIAL]] for t in cell])
        assert (np.diff(counts) <= 0).all()
        same = np.diff(counts) == 0
        assert (np.diff(cell)[same] > 0).all()  # ties: increasing token id
    assert (np.diff(x[:, gene_pos[2:]], axis=1) == 0).any()  # there are ties to order
    # the same tokens when the data's genes come in another order, and from the file tokeniser
    shuffled = _setup(adata[:, np.random.default_rng(0).permutation(adata.n_vars)].copy())
    with pytest.warns(UserWarning):
        other = sa.model.Geneformer.from_huggingface(checkpoint["dir"], shuffled, token_dictionary=checkpoint["tokens"],
                                                     gene_median_dictionary=equal)
    assert torch.equal(other.module.tokenize(torch.as_tensor(shuffled.X.toarray()))[0], ids)
    vocab = GeneVocabulary.from_token_dictionary(checkpoint["token_dict"])
    enc = rank_value_encode(shuffled.X, vocab.ids(shuffled.var_names), np.ones(shuffled.n_vars), max_length=64)
    np.testing.assert_array_equal(enc.input_ids[:, : ids.shape[1]], ids.numpy())


def test_refuses_mismatched_checkpoints(checkpoint, tmp_path):
    adata = _setup(_counts())
    tokens = pickle.load(open(checkpoint["tokens"], "rb"))
    with pytest.raises(ValueError, match="vocab_size"):
        sa.model.Geneformer.from_huggingface(
            checkpoint["dir"], adata, token_dictionary={**tokens, "ENSG99999999998": N_SPECIAL + N_GENES},
            gene_median_dictionary=checkpoint["medians"])
    unregistered = _counts()
    with pytest.raises(ValueError, match="Register adata first"):
        _load(checkpoint, unregistered)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="emb_layer must be an integer from -2"):
        _load(checkpoint, adata, emb_layer=1)
    # a checkpoint missing a weight, and one whose layer norm epsilon differs
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    checkpoint["bert"].save_pretrained(bad)
    state = load_file(bad / "model.safetensors")
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, bad / "model.safetensors")
    with pytest.warns(UserWarning), \
            pytest.raises(ValueError, match="lacks 'bert.encoder.layer.1.output.dense.weight'"):
        sa.model.Geneformer.from_huggingface(bad, adata, token_dictionary=tokens,
                                             gene_median_dictionary=checkpoint["medians"])
    eps = tmp_path / "eps"
    cfg = checkpoint["bert"].config
    cfg_eps = transformers.BertConfig(**{**cfg.to_dict(), "layer_norm_eps": 1e-5})
    transformers.BertForMaskedLM(cfg_eps).save_pretrained(eps)
    with pytest.raises(ValueError, match="layer_norm_eps"):
        sa.model.Geneformer.from_huggingface(eps, adata, token_dictionary=tokens,
                                             gene_median_dictionary=checkpoint["medians"])


# -- V2 -----------------------------------------------------------------------------------------
def test_v2_tokens_are_geneformers(checkpoint_v2):
    adata = _setup(_counts(seed=11))
    with pytest.warns(UserWarning, match="not in the model's vocabulary"):
        model = _load(checkpoint_v2, adata)
    module = model.module
    assert module.special_tokens == V2_SPECIALS and (module.cls_id, module.eos_id) == (2, 3)
    assert module.pooling == "cls" and module.emb_layer == -1 and module.max_length == V2_POSITIONS
    ref = geneformer_tokenize(adata, checkpoint_v2["token_dict"], checkpoint_v2["median_dict"],
                              model_input_size=V2_POSITIONS, special_token=True)
    n = np.array([len(c) for c in ref])
    assert n.max() == V2_POSITIONS and n.min() < V2_POSITIONS  # truncated and short cells
    ids, lengths, genes = module.tokenize(torch.as_tensor(adata.X.toarray()))
    np.testing.assert_array_equal(lengths.numpy(), n)
    np.testing.assert_array_equal(ids.numpy(), _padded(ref, ids.shape[1]))
    # <cls> and <eos> carry no gene
    assert (genes[:, 0] == -1).all() and (genes.gather(1, lengths[:, None] - 1) == -1).all()
    assert int((genes >= 0).sum()) == int((lengths - 2).sum())
    # the file tokeniser too
    vocab = GeneVocabulary.from_token_dictionary(checkpoint_v2["token_dict"])
    med = np.array([checkpoint_v2["median_dict"].get(g, 1.0) for g in adata.var_names])
    enc = rank_value_encode(adata.X, vocab.ids(adata.var_names), med, max_length=V2_POSITIONS,
                            pad_id=0, cls_id=2, eos_id=3)
    np.testing.assert_array_equal(enc.input_ids, _padded(ref, V2_POSITIONS))
    np.testing.assert_array_equal(enc.lengths, n)
    # and the scores of those tokens are transformers'
    real = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    torch.testing.assert_close(module.masked_logits(ids, lengths)[real],
                               _hf_logits(checkpoint_v2["bert"], ids, lengths)[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("pooling", "emb_mode"), [(None, "cls"), ("mean", "cell")])
def test_v2_embeddings_are_emb_extractors(checkpoint_v2, pooling, emb_mode):
    adata = _setup(_counts(seed=12))
    with pytest.warns(UserWarning):
        model = _load(checkpoint_v2, adata, pooling=pooling)
    ref = geneformer_tokenize(adata, checkpoint_v2["token_dict"], checkpoint_v2["median_dict"],
                              model_input_size=V2_POSITIONS, special_token=True)
    for layer in (-1, 0, -3):
        theirs = geneformer_embs(checkpoint_v2["bert"], ref, emb_mode=emb_mode, emb_layer=layer,
                                 special_token=True).numpy()
        ours = model.get_latent_representation(emb_layer=None if layer == -1 else layer)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="emb_layer must be an integer from -3"):
        model.get_latent_representation(emb_layer=-4)


def test_v2_classifier_reads_the_last_layer(checkpoint_v2):
    adata = _setup(_counts(n_cells=30, seed=13), labels_key="cell_type")
    with pytest.warns(UserWarning):
        model = _load(checkpoint_v2, adata)
    module = model.module
    x = torch.as_tensor(adata.X.toarray())
    out = module.inference(x)
    last = module.inference(x, emb_layer=0)[MODULE_KEYS.Z]
    torch.testing.assert_close(out[MODULE_KEYS.LOGITS], module.classifier(last))
    assert not torch.allclose(out[MODULE_KEYS.Z], last)
    assert "cls pooling of layer -1" in model._model_summary_string


@pytest.mark.parametrize("v2", [False, True])
def test_cells_without_vocabulary_genes_get_nan(checkpoint, checkpoint_v2, v2):
    ckpt = checkpoint_v2 if v2 else checkpoint
    adata = _counts(n_cells=20, seed=14)
    x = adata.X.toarray()
    x[[0, 5]] = 0
    x[[0, 5], -1] = 3  # counts only on the gene outside the vocabulary
    adata.X = sparse.csr_matrix(x)
    _setup(adata)
    with pytest.warns(UserWarning):
        model = _load(ckpt, adata)
    with pytest.warns(UserWarning, match="2 cells have no counts on any of the model's 40 vocabulary genes"):
        z = model.get_latent_representation()
    assert np.isnan(z[[0, 5]]).all() and np.isfinite(np.delete(z, [0, 5], axis=0)).all()
    keep = adata[np.setdiff1d(np.arange(20), [0, 5])].copy()
    ref = geneformer_tokenize(keep, ckpt["token_dict"], ckpt["median_dict"],
                              model_input_size=ckpt["bert"].config.max_position_embeddings, special_token=v2)
    theirs = geneformer_embs(ckpt["bert"], ref, emb_mode="cls" if v2 else "cell", emb_layer=-1, special_token=v2)
    np.testing.assert_allclose(np.delete(z, [0, 5], axis=0), theirs.numpy(), atol=1e-5, rtol=1e-5)
    # deleting every gene of a cell leaves it without tokens too
    only = _setup(_counts(n_cells=4, seed=15, genes=[GENES[3], GENES[4], OUTSIDE]))
    with pytest.warns(UserWarning) as caught:
        zp = model.get_perturbed_representation(only, genes=[GENES[3], GENES[4]])
    assert any("4 cells have no counts" in str(w.message) and "(or only the deleted genes)" in str(w.message)
               for w in caught)
    assert np.isnan(zp).all()


def test_checkpoint_lineage_is_the_published_weights(checkpoint):
    """A checkpoint loaded onto two AnnData (other genes, cells, labels) is one lineage, so that
    attention_shift accepts a model fine-tuned from one load against another load."""
    sa.settings.seed = 0
    sa.settings.progress_bar = False
    a = _setup(_counts(n_cells=40, seed=1))
    b = _setup(_counts(n_cells=30, seed=2, genes=[*GENES[4:], OUTSIDE]), labels_key="cell_type")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # genes outside the vocabulary
        base, other = _load(checkpoint, a), _load(checkpoint, b)
    assert base.pretrained_from_ is not None and base.pretrained_from_ == other.pretrained_from_
    other.train(max_epochs=1, batch_size=16)
    with pytest.warns(UserWarning, match="not in the model's vocabulary"):
        sa.tl.attention_shift(b.copy(), base, other, n_ranks=4)
