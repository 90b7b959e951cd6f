import logging

import pytest
import scvi

import scattn as sa


def test_settings_roundtrip():
    old = sa.settings.batch_size
    sa.settings.batch_size = 64
    assert sa.settings.batch_size == 64
    sa.settings.batch_size = old
    sa.settings.seed = 3
    assert scvi.settings.seed == 3
    with pytest.raises(ValueError):
        sa.settings.batch_size = 0
    with pytest.raises(TypeError):
        sa.settings.seed = "x"
    sa.settings.verbosity = "info"
    assert logging.getLogger("scattn").level == logging.INFO
    assert "ScattnConfig" in repr(sa.settings)


def test_import_sets_no_global_logging():
    assert logging.getLogger().level == logging.WARNING or logging.getLogger().handlers == []
    assert sa.__version__
