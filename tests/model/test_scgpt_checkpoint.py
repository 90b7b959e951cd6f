"""Original scGPT checkpoints: a tiny checkpoint written by scGPT's own ``TransformerModel``
(scgpt 0.2.4, random weights, every parameter perturbed; see tests/fixtures/scgpt_tiny) and its
outputs, reproduced by ``SCGPT.from_scgpt``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import scattn as sa

FIXTURE = Path(__file__).parents[1] / "fixtures" / "scgpt_tiny"


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE / "reference.npz"))


def _adata(reference, *, labels=False, batches=0):
    vocab = json.loads((FIXTURE / "vocab.json").read_text())
    inv = {v: k for k, v in vocab.items()}
    a = ad.AnnData(X=sparse.csr_matrix(reference["counts"]))
    a.var_names = [inv[int(i)] for i in reference["col_gene_ids"]]
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    if labels:
        a.obs["cell_type"] = pd.Categorical(["A", "B", "C", "A", "B"])
    if batches:
        a.obs["batch"] = pd.Categorical([f"b{i % batches}" for i in range(a.n_obs)])
    return a


def _our_ids(model, reference):
    vocab = json.loads((FIXTURE / "vocab.json").read_text())
    inv = {v: k for k, v in vocab.items()}
    ours = {t: i for i, t in enumerate(list(model.module.special_tokens) + list(model.var_names_))}
    return torch.tensor([[ours[inv[int(t)]] for t in row] for row in reference["src"]])


def _encode(model, reference, values="values"):
    mod = model.module
    ids = _our_ids(model, reference)
    lengths = torch.as_tensor((~reference["src_key_padding_mask"]).sum(1))
    with torch.no_grad():
        h, _ = mod.encode(ids, torch.as_tensor(reference[values]), lengths)
    return ids, h, torch.as_tensor(~reference["src_key_padding_mask"])


def test_outputs_equal_scgpts(reference):
    a = _adata(reference, labels=True)
    sa.model.SCGPT.setup_anndata(a, labels_key="cell_type")
    model = sa.model.SCGPT.from_scgpt(FIXTURE, a, keep_classifier=True)
    assert model.is_pretrained_ and model.module.vocab_size == 43
    ids, h, real = _encode(model, reference)
    mod = model.module
    with torch.no_grad():
        np.testing.assert_allclose(h[real], reference["transformer_output"][real.numpy()], atol=1e-5)
        np.testing.assert_allclose(h[:, 0], reference["cell_emb"], atol=1e-5)
        gep = mod.expression_decoder(h)
        np.testing.assert_allclose(gep[real], reference["mlm_output"][real.numpy()], atol=1e-5)
        gepc = mod.cell_decoder(h[:, 0], mod.gene_encoder(ids))
        np.testing.assert_allclose(gepc[real], reference["mvc_output"][real.numpy()], atol=1e-5)
        np.testing.assert_allclose(mod.classifier(h[:, 0]), reference["cls_output"], atol=1e-5)
        # other inputs: <cls> given the pad value (scGPT's embed_data), values above the clip
        _, h2, _ = _encode(model, reference, "values_clspad")
        np.testing.assert_allclose(h2[:, 0], reference["cell_emb_clspad"], atol=1e-5)
        _, h3, _ = _encode(model, reference, "values_big")
        np.testing.assert_allclose(h3[:, 0], reference["cell_emb_big"], atol=1e-5)
    # the comparison is not vacuous: the outputs differ between the inputs
    assert np.abs(reference["cell_emb"] - reference["cell_emb_clspad"]).max() > 1e-2


def test_tokens_from_counts_are_scgpts(reference):
    """From the counts, the same genes per cell and scGPT's bins wherever a value is not tied
    (scGPT 0.2 spreads tied values over their bins at random; scattn takes the top one)."""
    a = _adata(reference)
    sa.model.SCGPT.setup_anndata(a)
    model = sa.model.SCGPT.from_scgpt(FIXTURE, a)
    x = torch.as_tensor(reference["counts"])
    ids, lengths, columns, values, _ = model.module.tokenize(x)
    ref_ids = _our_ids(model, reference)
    for i in range(x.shape[0]):
        assert set(ids[i, 1 : lengths[i]].tolist()) == set(ref_ids[i, 1:][ref_ids[i, 1:] != model.module.pad_id].tolist())
    counts = reference["counts"]
    ours = sa.nn.bin_values(x, 51).numpy()
    untied = np.array([[(row == v).sum() == 1 for v in row] for row in counts]) & (counts > 0)
    np.testing.assert_array_equal(ours[untied], reference["binned"][untied])
    assert (ours[counts > 0] >= reference["binned"][counts > 0]).all()


def test_released_attention_names_and_batches(reference, tmp_path):
    """Flash-attention's ``Wqkv`` names (the released checkpoints) load the same; a model set
    up with batches grows its decoders' inputs by zero columns: outputs unchanged."""
    d = tmp_path / "released"
    shutil.copytree(FIXTURE, d)
    state = torch.load(d / "best_model.pt", weights_only=True)
    state = {k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v for k, v in state.items()}
    state["flag_encoder.weight"] = torch.zeros(2, 32)  # in the whole-human checkpoint, unused
    torch.save(state, d / "best_model.pt")
    a = _adata(reference, batches=2)
    sa.model.SCGPT.setup_anndata(a, batch_key="batch")
    model = sa.model.SCGPT.from_scgpt(d, a)
    ids, h, real = _encode(model, reference)
    np.testing.assert_allclose(h[:, 0], reference["cell_emb"], atol=1e-5)
    with torch.no_grad():
        c = model.module._condition_vector(torch.tensor([0, 1, 0, 1, 0]), None)
        gep = model.module.expression_decoder(model.module._with_condition(h, c))
    np.testing.assert_allclose(gep[real], reference["mlm_output"][real.numpy()], atol=1e-5)


def test_bad_checkpoints_are_refused(reference, tmp_path):
    a = _adata(reference)
    sa.model.SCGPT.setup_anndata(a)
    with pytest.raises(FileNotFoundError, match="args.json"):
        sa.model.SCGPT.from_scgpt(tmp_path, a)
    d = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, d)
    args = json.loads((d / "args.json").read_text())
    (d / "args.json").write_text(json.dumps({**args, "input_emb_style": "category"}))
    with pytest.raises(ValueError, match="continuous"):
        sa.model.SCGPT.from_scgpt(d, a)
    (d / "args.json").write_text(json.dumps(args))
    state = torch.load(d / "best_model.pt", weights_only=True)
    torch.save({**state, "dsbn.bns.0.running_mean": torch.zeros(32)}, d / "best_model.pt")
    with pytest.raises(ValueError, match="domain-specific batch norm"):
        sa.model.SCGPT.from_scgpt(d, a)
    torch.save(state, d / "best_model.pt")
    symbols = a.copy()
    symbols.var_names = [f"ENSG{i:011d}" for i in range(symbols.n_vars)]
    sa.model.SCGPT.setup_anndata(symbols)
    with pytest.raises(ValueError, match="(?i)ensembl|symbol"):
        sa.model.SCGPT.from_scgpt(d, symbols)
