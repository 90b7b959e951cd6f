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


def _checkpoint(tmp_path, *, args: dict | None = None, drop=(), add: dict | None = None):
    """A copy of the fixture with `args` merged into args.json, the keys starting with one of
    `drop` removed from best_model.pt and `add` added to it."""
    d = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, d, dirs_exist_ok=True)
    if args:
        merged = {**json.loads((FIXTURE / "args.json").read_text()), **args}
        (d / "args.json").write_text(json.dumps(merged))
    if drop or add:
        state = torch.load(FIXTURE / "best_model.pt", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(tuple(drop))}
        torch.save({**state, **(add or {})}, d / "best_model.pt")
    return d


@pytest.fixture
def plain(reference):
    a = _adata(reference)
    sa.model.SCGPT.setup_anndata(a)
    return a


def test_missing_tensors_are_refused(reference, plain, tmp_path):
    """args.json with 3 layers and a file with 2: refused, naming the missing layer's keys and
    the likely cause (not loaded with layer 3 random)."""
    d = _checkpoint(tmp_path, args={"nlayers": 3})
    with pytest.raises(ValueError, match=r"lacks 12 tensor\(s\)") as err:
        sa.model.SCGPT.from_scgpt(d, plain)
    msg = str(err.value)
    assert "transformer_encoder.layers.2.self_attn.in_proj_weight" in msg
    assert "holds 2 transformer layers, args.json says nlayers=3" in msg
    assert "different models" in msg and "(and 7 more)" in msg
    # one tensor missing anywhere (here the GEP decoder's last bias) is refused too
    d = _checkpoint(tmp_path / "one", drop=("decoder.fc.4.bias",))
    with pytest.raises(ValueError, match=r"lacks 1 tensor\(s\).*decoder\.fc\.4\.bias"):
        sa.model.SCGPT.from_scgpt(d, plain)
    # the GEPC decoder, which args.json's MVC=true says was trained
    d = _checkpoint(tmp_path / "mvc", drop=("mvc_decoder.",))
    with pytest.raises(ValueError, match=r"lacks 3 tensor\(s\).*mvc_decoder\.gene2query\.weight"):
        sa.model.SCGPT.from_scgpt(d, plain)
    # a batch embedding that use_batch_labels says is there
    d = _checkpoint(tmp_path / "batch", args={"use_batch_labels": True})
    with pytest.raises(ValueError, match=r"lacks 3 tensor\(s\).*batch_encoder\.embedding\.weight"):
        sa.model.SCGPT.from_scgpt(d, plain)


def test_gepc_decoder_off_in_args_loads_with_warning(reference, plain, tmp_path):
    """A checkpoint trained without GEPC (args.json MVC=false, no mvc_decoder) loads, warns that
    the GEPC decoder is new, and the transformer still reproduces scGPT's outputs."""
    d = _checkpoint(tmp_path, args={"MVC": False}, drop=("mvc_decoder.",))
    with pytest.warns(UserWarning, match="no GEPC decoder"):
        model = sa.model.SCGPT.from_scgpt(d, plain)
    _, h, _ = _encode(model, reference)
    np.testing.assert_allclose(h[:, 0], reference["cell_emb"], atol=1e-5)


def test_unexpected_tensors_are_refused(plain, tmp_path):
    """A tensor of the file the model has no place for is refused by name: a stray key, or a
    layer beyond args.json's nlayers."""
    d = _checkpoint(tmp_path, add={"encoder.extra_norm.weight": torch.ones(32),
                                   "something_else.weight": torch.ones(3)})
    with pytest.raises(ValueError, match=r"has 2 tensor\(s\) that are no part") as err:
        sa.model.SCGPT.from_scgpt(d, plain)
    assert "encoder.extra_norm.weight" in str(err.value)
    assert "something_else.weight" in str(err.value)
    d = _checkpoint(tmp_path / "layers", args={"nlayers": 1})
    with pytest.raises(ValueError, match=r"has 12 tensor\(s\)") as err:
        sa.model.SCGPT.from_scgpt(d, plain)
    assert "transformer_encoder.layers.1.linear1.weight" in str(err.value)
    assert "holds 2 transformer layers, args.json says nlayers=1" in str(err.value)


def test_shape_mismatches_are_refused(plain, tmp_path):
    """A feed-forward width other than args.json's d_hid: refused naming each key and both
    shapes."""
    d = _checkpoint(tmp_path, args={"d_hid": 128})
    with pytest.raises(ValueError, match=r"6 tensor\(s\) of best_model.pt do not have") as err:
        sa.model.SCGPT.from_scgpt(d, plain)
    msg = str(err.value)
    want = "transformer_encoder.layers.0.linear1.weight (64, 32) in the file, (128, 32) expected"
    assert want in msg
    assert "d_hid=128" in msg
    # a decoder grown for batches checks the checkpoint's own width, not a raw copy error
    bad = torch.load(FIXTURE / "best_model.pt", weights_only=True)["decoder.fc.0.weight"][:, :16]
    d = _checkpoint(tmp_path / "dec", add={"decoder.fc.0.weight": bad.clone()})
    with pytest.raises(ValueError, match=r"fc\.0\.weight \(32, 16\) in the file, \(32, 32"):
        sa.model.SCGPT.from_scgpt(d, plain)


def test_corrupt_files_are_refused(plain, tmp_path):
    """A truncated best_model.pt (a download cut in half) or a file of something else: a
    ValueError naming the file, not a raw zip or pickle traceback."""
    d = _checkpoint(tmp_path)
    data = (FIXTURE / "best_model.pt").read_bytes()
    (d / "best_model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"best_model\.pt could not be read.*truncated"):
        sa.model.SCGPT.from_scgpt(d, plain)
    (d / "best_model.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        sa.model.SCGPT.from_scgpt(d, plain)
    torch.save([torch.zeros(2)], d / "best_model.pt")
    with pytest.raises(ValueError, match=r"best_model\.pt holds a list, not a state dict"):
        sa.model.SCGPT.from_scgpt(d, plain)


@pytest.mark.parametrize(("setting", "match"), [
    ({"pre_norm": True}, "pre_norm=true.*neither PyTorch's norm_first nor post-norm"),
    ({"cell_emb_style": "avg-pool"}, "cell_emb_style='avg-pool'.*padding"),
    ({"cell_emb_style": "w-pool"}, "cell_emb_style='w-pool'.*only 'cls'"),
    ({"explicit_zero_prob": True}, "explicit_zero_prob=true"),
    ({"domain_spec_batchnorm": "dsbn"}, "domain-specific batch norm"),
    ({"DSBN": True}, "domain-specific batch norm"),
    ({"input_emb_style": "scaling"}, "input_emb_style='scaling'.*continuous"),
    ({"input_style": "log1p"}, "input_style='log1p'.*unbinned"),
    ({"fast_transformer_backend": "linear"}, "fast_transformer_backend='linear'"),
    ({"mvc_decoder_style": "concat query"}, "mvc_decoder_style='concat query'"),
    ({"pad_token": "<blank>"}, "pad_token='<blank>'"),
])
def test_settings_that_change_outputs_are_refused(plain, tmp_path, setting, match):
    d = _checkpoint(tmp_path, args=setting)
    with pytest.raises(ValueError, match=f"cannot reproduce: .*{match}"):
        sa.model.SCGPT.from_scgpt(d, plain)


def test_settings_that_keep_outputs_load(reference, plain, tmp_path):
    """The same settings at scGPT's defaults, and ones that do not change the math (flash
    attention, category bins unused with continuous values), load and reproduce scGPT."""
    d = _checkpoint(tmp_path, args={
        "pre_norm": False, "cell_emb_style": "cls", "explicit_zero_prob": False,
        "domain_spec_batchnorm": False, "DSBN": False, "use_fast_transformer": True,
        "fast_transformer": True, "fast_transformer_backend": "flash", "n_input_bins": 51,
        "mvc_decoder_style": "inner product", "do_mvc": True, "use_batch_labels": False})
    model = sa.model.SCGPT.from_scgpt(d, plain)
    _, h, real = _encode(model, reference)
    np.testing.assert_allclose(h[real], reference["transformer_output"][real.numpy()], atol=1e-5)


def test_heads_are_kept_only_when_they_fit(reference, tmp_path):
    """A checkpoint's batch discriminator is loaded into a model with as many batches and
    dropped by one without batches; keep_classifier on a checkpoint without a head warns."""
    state = torch.load(FIXTURE / "best_model.pt", weights_only=True)
    disc = {k.replace("cls_decoder.", "grad_reverse_discriminator."): v.clone() + 1
            for k, v in state.items() if k.startswith("cls_decoder.")}  # 3 classes
    d = _checkpoint(tmp_path, add=disc)
    a = _adata(reference, batches=3)
    sa.model.SCGPT.setup_anndata(a, batch_key="batch")
    model = sa.model.SCGPT.from_scgpt(d, a)
    got = model.module.batch_discriminator.out_layer.weight
    ref = disc["grad_reverse_discriminator.out_layer.weight"]
    np.testing.assert_array_equal(got.detach(), ref)
    a = _adata(reference)
    sa.model.SCGPT.setup_anndata(a)
    sa.model.SCGPT.from_scgpt(d, a)  # no batches: the discriminator is not needed
    d = _checkpoint(tmp_path / "nohead", drop=("cls_decoder.",))
    a = _adata(reference, labels=True)
    sa.model.SCGPT.setup_anndata(a, labels_key="cell_type")
    with pytest.warns(UserWarning, match=r"has no cell-type head \(cls_decoder\)"):
        model = sa.model.SCGPT.from_scgpt(d, a, keep_classifier=True)
    assert model.module.has_head
