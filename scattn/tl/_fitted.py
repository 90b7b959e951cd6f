"""What a tool asks of the model it is given: trained or pretrained, and the lineage of a
fine-tuned model."""

from __future__ import annotations

import warnings

from scattn._quiet import user_stacklevel

__all__ = ["check_fitted", "check_lineage"]


def check_fitted(model, tool: str, *, name: str = "model") -> None:
    """A clear error for a scattn model that is neither trained nor pretrained (its weights are
    the random initialisation, so whatever a tool reads from them means nothing).

    Objects that are not scattn models (they lack ``is_trained_``) are left to the tool's own
    duck-typed checks.
    """
    if not hasattr(model, "is_trained_"):
        return
    if bool(model.is_trained_) or bool(getattr(model, "is_pretrained_", False)):
        return
    kind = type(model).__name__
    steps = "`model.train()`" + (" or `model.pretrain()`" if hasattr(model, "pretrain") else "")
    raise ValueError(
        f"{tool}: `{name}` (a {kind}) is neither trained nor pretrained, so its weights are random "
        f"and what {tool} would read from them means nothing. Call {steps} first, or load a "
        f"trained model (`sa.model.{kind}.load(dir, adata)`)."
    )


def check_lineage(pretrained, finetuned, tool: str) -> None:
    """A clear error unless `pretrained` was pretrained (or loaded from a published checkpoint)
    and `finetuned` was fine-tuned from exactly its weights (``Model.from_pretrained(pretrained,
    labelled)``, then ``train()``). Duck-typed models without scattn's attributes pass."""
    from scattn.model.base import weights_fingerprint

    if hasattr(pretrained, "is_pretrained_") and not pretrained.is_pretrained_:
        raise ValueError(
            f"{tool}: `pretrained` (a {type(pretrained).__name__}) was never pretrained: pass the "
            "model after `model.pretrain()` or one loaded from a pretrained checkpoint "
            "(`from_huggingface`, `from_scgpt`, `load`)."
        )
    check_fitted(finetuned, tool, name="finetuned")
    if not hasattr(finetuned, "pretrained_from_"):
        return
    if not finetuned.is_trained_:
        raise ValueError(f"{tool}: `finetuned` has not been trained since it was made from the "
                         "pretrained weights; call `finetuned.train()` first.")
    if finetuned.pretrained_from_ is None:
        warnings.warn(
            f"{tool}: `finetuned` records no pretrained weights it started from (trained from "
            "scratch, or saved by an earlier scattn), so whether it comes from `pretrained` "
            "cannot be checked.", UserWarning, stacklevel=user_stacklevel(),
        )
        return
    if hasattr(pretrained, "module") and finetuned.pretrained_from_ != weights_fingerprint(
            pretrained.module):
        raise ValueError(
            f"{tool}: `finetuned` was not fine-tuned from this `pretrained` model (it started from "
            "other weights: another checkpoint, or this model was trained further afterwards). "
            "Pass the pretrained model it was made from."
        )
