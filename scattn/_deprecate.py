"""Deprecations for one release: renamed keyword arguments and changed argument orders warn
(:class:`FutureWarning`, pointing at the user's line) and keep working.

Use it where a public function's argument is renamed::

    from scattn._deprecate import renamed_arguments

    @renamed_arguments(markers_key="key")
    def gene_sets_from_attention(adata, model, *, key=None, ...): ...

``gene_sets_from_attention(adata, model, markers_key="cgran_markers")`` then warns and runs as
``key="cgran_markers"``; giving both names is a :class:`TypeError`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TypeVar

from scattn._quiet import user_stacklevel

__all__ = ["public_name", "renamed_arguments", "warn_deprecated"]

F = TypeVar("F", bound=Callable)

#: what the warnings promise
REMOVAL = "will be removed in the next release"


def public_name(func: Callable) -> str:
    """How users call `func`: ``"sa.pl.attention_heatmap"`` for
    ``scattn.pl._attention.attention_heatmap``, ``"CGRAN.get_gene_attention"`` for a method."""
    qualname = func.__qualname__.rpartition("<locals>.")[2]
    if "." in qualname:  # a method: its class is what users see
        return qualname
    public = [p for p in func.__module__.split(".") if not p.startswith("_")]
    if public and public[0] == "scattn":
        public[0] = "sa"
    return ".".join([*public, func.__name__])


def warn_deprecated(message: str) -> None:
    """A :class:`FutureWarning` naming the caller's line in the user's code (however deep the
    call went inside scattn), the one way scattn's deprecations warn."""
    warnings.warn(message, FutureWarning, stacklevel=user_stacklevel())


def renamed_arguments(**renames: str) -> Callable[[F], F]:
    """Accept the old names of renamed keyword arguments for one release, with a warning.

    Parameters
    ----------
    **renames
        ``old_name="new_name"`` for each renamed argument; `new_name` must be a parameter of
        the decorated function.

    Returns
    -------
    A decorator. The wrapped function keeps its signature and docstring (``inspect`` and the
    docs show the new names only); a call with an old name warns with a :class:`FutureWarning`
    and passes the value under the new name, and one with both names is a :class:`TypeError`.
    """
    if not renames:
        raise ValueError("renamed_arguments needs at least one old_name='new_name'.")

    def decorator(func: F) -> F:
        import inspect

        params = inspect.signature(func).parameters
        for old, new in renames.items():
            if new not in params:
                raise ValueError(f"{func.__qualname__} has no argument {new!r} (the new name of {old!r}).")
            if old in params:
                raise ValueError(f"{func.__qualname__} still has the old argument {old!r}.")

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old in renames.keys() & kwargs.keys():
                new = renames[old]
                if new in kwargs:
                    raise TypeError(
                        f"{public_name(func)}() got both {old}= and {new}=; {old} is the old name "
                        f"of {new}, pass {new}= only."
                    )
                warn_deprecated(
                    f"{public_name(func)}({old}=...) is deprecated and {REMOVAL}; "
                    f"use {new}=... instead."
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        wrapper.__renamed_arguments__ = dict(renames)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator
