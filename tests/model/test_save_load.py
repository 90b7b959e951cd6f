"""Saving is atomic and checked; loading a damaged or foreign file says so."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from scvi.model.base import BaseModelClass

import scattn as sa


def test_save_refuses_files_and_existing_directories(trained_cfan, tmp_path):
    model, _ = trained_cfan
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        model.save(a_file)
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match="already exists; pass `overwrite=True`"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "m"]  # no temporary folder left


def test_crash_while_saving_keeps_the_previous_save(trained_cfan, tmp_path, monkeypatch):
    model, adata = trained_cfan
    model.save(tmp_path / "m")
    before = (tmp_path / "m" / "model.pt").read_bytes()

    def crash(self, dir_path, **kwargs):
        (open(os.path.join(dir_path, "model.pt"), "wb")).write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(BaseModelClass, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "model.pt").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m"]
    monkeypatch.undo()
    loaded = sa.model.CFAN.load(tmp_path / "m", adata=adata)
    np.testing.assert_allclose(loaded.predict_proba(), model.predict_proba(), atol=1e-6)


@pytest.mark.parametrize("damage", ["empty", "truncated", "foreign pickle", "foreign dict"])
def test_damaged_or_foreign_model_file(trained_cfan, tmp_path, damage):
    model, adata = trained_cfan
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model.pt"
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "foreign pickle":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="model.pt is not a (readable )?scattn"):
        sa.model.CFAN.load(tmp_path / "m", adata=adata)


def test_load_other_class_and_missing(trained_cfan, tmp_path):
    model, adata = trained_cfan
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a saved CFAN model, not a CGRAN"):
        sa.model.CGRAN.load(tmp_path / "m", adata=adata)
    with pytest.raises(FileNotFoundError, match="No saved model"):
        sa.model.CFAN.load(tmp_path / "nothing", adata=adata)


def test_overwrite_removes_an_older_saved_anndata(trained_cfan, trained, tmp_path):
    cgran, cgran_data = trained
    cfan, _ = trained_cfan
    cgran.save(tmp_path / "m", save_anndata=True)
    cfan.save(tmp_path / "m", overwrite=True)  # no AnnData this time
    assert not (tmp_path / "m" / "adata.h5ad").exists()
    with pytest.raises(ValueError, match="holds no AnnData"):
        sa.model.CFAN.load(tmp_path / "m")


def test_user_var_column_named_like_internal_marks_is_ignored(tmp_path):
    from tests.conftest import TINY_SIMS, make_counts

    data = make_counts()
    data.var["present"] = False
    data.var["_scattn_present"] = False
    sa.model.SIMS.setup_anndata(data, labels_key="cell_type", layer="counts")
    model = sa.model.SIMS(data, **TINY_SIMS)
    model.pretrain(max_epochs=1, batch_size=32, enable_progress_bar=False)
    assert model.pretrain_history_["train_loss"].iloc[-1, 0] > 0  # genes were scored
