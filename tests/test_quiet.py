"""Quiet by default: third-party chatter is silenced inside `quiet()`, unless verbosity is INFO."""

from __future__ import annotations

import logging
import warnings

import pytest

import scattn as sa
from scattn._quiet import CHATTER_WARNINGS, CHATTY_LOGGERS, is_quiet, quiet
from tests.conftest import TINY, make_counts

# what a user saw on every train/predict before (logging records, warnings, prints)
CHATTER_LOGS = (
    "GPU available",
    "TPU available",
    "Tip:",
    "`Trainer.fit` stopped",
    "Seed set to",
    "Input AnnData not setup with scvi-tools",
    "already downloaded",
)
CHATTER_WARNING_TEXT = ("LeafSpec", "logging interval", "does not have many workers")
EARLY_STOP_PRINT = "did not improve"


@pytest.fixture
def verbosity():
    """Start at the default verbosity (other tests set "info"); restore afterwards."""
    old = sa.settings.verbosity
    sa.settings.verbosity = "warning"
    yield
    sa.settings.verbosity = old


@pytest.fixture
def log_records(monkeypatch) -> list[logging.LogRecord]:
    """Every logging record any logger hands to its handlers, whatever the handlers are.

    Lightning's loggers have their own handlers and do not propagate, so caplog alone would
    miss them; records suppressed by a logger's level never get here.
    """
    records: list[logging.LogRecord] = []
    original = logging.Logger.callHandlers

    def spy(self, record):
        records.append(record)
        return original(self, record)

    monkeypatch.setattr(logging.Logger, "callHandlers", spy)
    return records


def _data():
    sa.settings.seed = 0
    data = make_counts()
    sa.model.CGRAN.setup_anndata(data, labels_key="cell_type", layer="counts")
    return data


def _train_and_predict(wrap: bool) -> None:
    """train(max_epochs=1) then predict on a new AnnData, optionally inside `quiet()`."""
    data = _data()
    query = make_counts(60, seed=3)
    model = sa.model.CGRAN(data, **TINY)
    if wrap:
        with quiet():
            model.train(max_epochs=1, enable_progress_bar=False)
            model.predict(query.copy())
    else:
        model.train(max_epochs=1, enable_progress_bar=False)
        model.predict(query.copy())
    assert "cgran_prediction" not in query.obs  # predicted on a copy


def _early_stop(wrap: bool) -> None:
    """Training that early stopping ends after two epochs (lr 0: the loss never improves)."""
    model = sa.model.CGRAN(_data(), **TINY)
    kwargs = {"max_epochs": 5, "lr": 0.0, "early_stopping_patience": 1, "enable_progress_bar": False}
    if wrap:
        with quiet():
            model.train(**kwargs)
    else:
        model.train(**kwargs)
    assert len(model.history["train_loss"]) < 5  # early stopping did stop it


def _chatter(records, recwarn, captured) -> list[str]:
    """Every chatter line that reached the user (a log record, a warning or printed text)."""
    found = [r.getMessage() for r in records if any(c in r.getMessage() for c in CHATTER_LOGS)]
    found += [str(w.message) for w in recwarn if any(c in str(w.message) for c in CHATTER_WARNING_TEXT)]
    text = captured.out + captured.err
    found += [c for c in (*CHATTER_LOGS, *CHATTER_WARNING_TEXT, EARLY_STOP_PRINT) if c in text]
    return found


def test_quiet_silences_train_and_predict(verbosity, log_records, recwarn, capfd):
    _train_and_predict(wrap=True)
    assert _chatter(log_records, recwarn, capfd.readouterr()) == []


def test_verbosity_info_shows_chatter(verbosity, log_records, recwarn, capfd):
    """With verbosity INFO `quiet()` is a no-op; this also shows the run above has chatter to hide."""
    sa.settings.verbosity = "info"
    assert not is_quiet()
    _train_and_predict(wrap=True)
    messages = [r.getMessage() for r in log_records]
    assert any("GPU available" in m for m in messages)
    assert any("Input AnnData not setup with scvi-tools" in m for m in messages)
    # 135 training cells in batches of 32: fewer batches than Lightning's logging interval
    assert any("logging interval" in str(w.message) for w in recwarn)


def test_quiet_silences_early_stopping_print(verbosity, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="scattn"):
        _early_stop(wrap=True)
    assert EARLY_STOP_PRINT not in capsys.readouterr().out
    assert any(EARLY_STOP_PRINT in r.getMessage() for r in caplog.records)  # logged at INFO instead


def test_verbosity_info_shows_early_stopping_print(verbosity, capsys, recwarn):
    sa.settings.verbosity = "info"
    _early_stop(wrap=True)
    assert EARLY_STOP_PRINT in capsys.readouterr().out


def test_quiet_keeps_warnings_to_act_on(verbosity, recwarn):
    data = _data()
    model = sa.model.CGRAN(data, **TINY)
    with quiet():
        model.train(max_epochs=1, enable_progress_bar=False)
    query = make_counts(60, seed=3)[:, 10:].copy()  # lacks the model's marker genes MK0_*, MK1_*
    with pytest.warns(UserWarning, match="missing"), quiet():
        model.predict(query)
    # scvi-tools' warnings that need acting on pass too
    with pytest.warns(UserWarning, match="unnormalized count data"), quiet():
        warnings.warn("Make sure the registered X field in anndata contains unnormalized count data.",
                      UserWarning, stacklevel=1)
    with pytest.warns(UserWarning, match="untrained model"), quiet():
        sa.model.CGRAN(data, **TINY).get_latent_representation()
    assert all(not any(c in str(w.message) for c in CHATTER_WARNING_TEXT) for w in recwarn)


def test_quiet_restores_state(verbosity):
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    filters = list(warnings.filters)
    with pytest.raises(RuntimeError), quiet():
        assert all(logging.getLogger(n).level >= lvl for n, lvl in CHATTY_LOGGERS.items())
        assert len(warnings.filters) >= len(filters) + len(CHATTER_WARNINGS)
        raise RuntimeError("fails inside the block")
    assert {name: logging.getLogger(name).level for name in CHATTY_LOGGERS} == levels
    assert warnings.filters == filters

    @quiet()
    def decorated():
        return logging.getLogger("scvi.model.base._base_model").level

    assert decorated() == logging.WARNING
    assert logging.getLogger("scvi.model.base._base_model").level == levels["scvi.model.base._base_model"]


def test_quiet_is_noop_at_info(verbosity):
    sa.settings.verbosity = logging.DEBUG
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    filters = list(warnings.filters)
    with quiet():
        assert {name: logging.getLogger(name).level for name in CHATTY_LOGGERS} == levels
        assert warnings.filters == filters


def test_models_are_quiet_by_default(verbosity, log_records, recwarn, capfd):
    """No explicit `quiet()`: the model methods must silence the chatter themselves."""
    _train_and_predict(wrap=False)
    assert _chatter(log_records, recwarn, capfd.readouterr()) == []


def test_setting_the_seed_is_quiet(verbosity, log_records):
    sa.settings.seed = 0
    assert not any("Seed set to" in r.getMessage() for r in log_records)
    sa.settings.verbosity = "info"
    sa.settings.seed = 0
    assert any("Seed set to" in r.getMessage() for r in log_records)


class _Fails(__import__("lightning").pytorch.Callback):
    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("planted failure")


def test_failed_training_prints_nothing_but_raises(verbosity, capsys):
    """scvi-tools prints "Exception raised during training." before re-raising: not to the user."""
    model = sa.model.CGRAN(_data(), **TINY)
    with pytest.raises(RuntimeError, match="planted failure"):
        model.train(max_epochs=1, enable_progress_bar=False, callbacks=[_Fails()])
    assert "Exception raised" not in capsys.readouterr().out
    from scvi.train import _trainrunner

    assert "print" not in vars(_trainrunner)  # the module's print is the builtin again


def test_few_cells_train_without_validation(verbosity, caplog):
    """Fewer than ten cells leave none for validation at the default train_size: training goes
    on without it (no early stopping, no best weights) and says so once."""
    data = make_counts(8, seed=1)
    sa.model.CGRAN.setup_anndata(data, labels_key="cell_type", layer="counts")
    model = sa.model.CGRAN(data, **TINY)
    with caplog.at_level(logging.WARNING, logger="scattn"):
        model.train(max_epochs=2, enable_progress_bar=False)
    said = [r.getMessage() for r in caplog.records if "none for validation" in r.getMessage()]
    assert len(said) == 1 and "restoring the best weights" in said[0]
    assert model.is_trained_ and len(model.history_["train_loss"]) == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scattn"):
        model.train(max_epochs=1, train_size=1.0, enable_progress_bar=False)  # asked for: no word
    assert not [r for r in caplog.records if "none for validation" in r.getMessage()]


def test_warnings_point_at_the_callers_line():
    """A warning raised deep inside scattn (or in a scvi-tools callback into it) names the
    user's line, whatever the depth: set-up, prediction on data lacking genes."""
    import warnings

    import scattn as sa
    from tests.conftest import make_counts, tiny_model

    adata = make_counts(60)
    adata.obs["slashed"] = adata.obs["cell_type"].astype(str).str.replace("type", "a/b")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sa.model.CFAN.setup_anndata(adata, labels_key="slashed", layer="counts")
    slash = [w for w in caught if "contain '/'" in str(w.message)]
    assert slash and all(w.filename == __file__ for w in slash), [(w.filename, str(w.message)[:40]) for w in caught]
    model = tiny_model("CFAN", make_counts(60))
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict(make_counts(30)[:, 5:].copy(), inplace=False)
    missing = [w for w in caught if "missing" in str(w.message)]
    assert missing and all(w.filename == __file__ for w in missing), [(w.filename, str(w.message)[:40]) for w in caught]
