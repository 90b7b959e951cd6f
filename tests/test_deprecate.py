"""scattn._deprecate: renamed keyword arguments warn for one release and keep working."""

from __future__ import annotations

import inspect
import warnings

import pytest

import scattn as sa
from scattn._deprecate import public_name, renamed_arguments, warn_deprecated


@renamed_arguments(old="new", older="newer")
def _f(adata, *, new=None, newer=1):
    """Doc."""
    return adata, new, newer


def test_new_names_pass_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _f(0, new=2, newer=3) == (0, 2, 3)
        assert _f(0) == (0, None, 1)


def test_old_name_warns_at_the_callers_line_and_passes_on():
    with pytest.warns(FutureWarning, match=r"_f\(old=...\) is deprecated .*use new=\.\.\. instead") as record:
        assert _f(0, old=2) == (0, 2, 1)
    assert record[0].filename == __file__  # the user's line, not scattn's
    with pytest.warns(FutureWarning) as record:
        assert _f(0, old=2, older=5) == (0, 2, 5)
    assert len(record) == 2


def test_both_names_is_an_error():
    with pytest.raises(TypeError, match="both old= and new="):
        _f(0, old=1, new=2)


def test_signature_and_docs_show_the_new_names():
    assert list(inspect.signature(_f).parameters) == ["adata", "new", "newer"]
    assert _f.__doc__ == "Doc."
    assert _f.__renamed_arguments__ == {"old": "new", "older": "newer"}


def test_bad_renames_fail_at_definition():
    with pytest.raises(ValueError, match="no argument 'nope'"):
        renamed_arguments(old="nope")(lambda *, new=None: new)
    with pytest.raises(ValueError, match="still has the old argument 'old'"):
        renamed_arguments(old="new")(lambda *, old=None, new=None: new)
    with pytest.raises(ValueError, match="at least one"):
        renamed_arguments()


def test_public_names():
    assert public_name(sa.pl.attention_heatmap.__wrapped__) == "sa.pl.attention_heatmap"
    assert public_name(sa.tl.gene_sets_from_attention.__wrapped__) == "sa.tl.gene_sets_from_attention"
    assert public_name(sa.model.CGRAN.get_gene_attention) == "CGRAN.get_gene_attention"


def test_warn_deprecated_is_a_future_warning():
    with pytest.warns(FutureWarning, match="gone soon") as record:
        warn_deprecated("gone soon")
    assert record[0].filename == __file__


def test_public_functions_declare_their_renames():
    """The arguments renamed for the one face (old -> new), until they are removed."""
    assert sa.pl.attention_heatmap.__renamed_arguments__ == {"markers_key": "key"}
    assert sa.tl.gene_sets_from_attention.__renamed_arguments__ == {"markers_key": "key"}
