"""Geneformer speed on CPU: scattn's module against Hugging Face ``BertForMaskedLM``.

Four measurements in one process, on the Kang 2018 PBMC control cells (counts):

(a) **Pretraining throughput** (real, non-pad tokens per second; ``<cls>`` counts as a
    token). A ``Geneformer(preset="v1")`` is built on a few thousand cells (its vocabulary is
    every registered gene, its medians theirs) and its ``module.tokenize`` turns random cells,
    grouped by length as both pretrainers do, into minibatches of at most 2,048 tokens, and
    the same cells cut to 512 tokens. On the *same* minibatches, interleaved step by step,
    three implementations train with AdamW and the module's own ``_mask_tokens`` corruption
    (15%, 80/10/10): scattn's module (encoder, then the masked-LM head only at the chosen
    positions) and ``transformers.BertForMaskedLM`` with an identical V1 configuration (6
    layers, width 256, 4 heads, feed-forward 512, relu, dropout 0.02 on hidden states and
    attention, the tokenised data's vocabulary, 2,048 positions), with
    ``attn_implementation="eager"`` and ``"sdpa"`` (its default). The Hugging Face model gets
    labels -100 at unmasked positions: its standard path scores every position over the whole
    vocabulary and then ignores all but the masked ones, which is what is compared here.
(b) **Equal loss curves**: Hugging Face's initial weights are copied into the scattn module
    (:func:`scattn.model._geneformer_hf.module_state_from_bert`; BERT's token-type embeddings
    are zeroed and frozen, since scattn folds row 0 into the positions), dropout is 0 in both,
    both see the same corrupted inputs and targets (drawn once) and train the same steps with
    the same AdamW settings and schedule; the curves' largest absolute difference is reported,
    the curves written to ``geneformer_loss_curves.csv`` and plotted to
    ``geneformer_loss_curves.png``.
(c) **Tokeniser speed** (cells/s): :func:`scattn.data.rank_value_encode` on every control cell
    (2,048 tokens at most, ``<cls>`` first).
(d) **Inference speed** (cells/s): ``model.get_latent_representation`` of untrained ``cpu``
    and ``v1`` presets (the weights do not change the cost).

The machine load (``uptime``) before and after is written with the results: other jobs on the
same cores slow every implementation, which the step-by-step interleaving of (a) shares out.

    python -m benchmarks.studies.geneformer_speed [--quick]

``--quick`` (batch 2, 1,024 and 256 tokens, one timed step) only checks that everything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import subprocess
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._common import RESULTS, data_dir, pin_threads, write_results

logger = logging.getLogger(__name__)

KANG_CTRL = "kang2018_pbmc_ctrl_unlabeled.h5ad"


@dataclass
class Settings:
    """What one run measures (the default or ``--quick``)."""

    n_model_cells: int = 3000
    batch_size: int = 8
    lengths: tuple[int, ...] = (2048, 512)
    warmup_steps: int = 1
    timed_steps: int = 4
    curve_steps: int = 30
    curve_length: int = 256
    curve_lr: float = 1e-3
    tokenizer_repeats: int = 3
    inference_cells: tuple[tuple[str, int], ...] = (("cpu", 2000), ("v1", 128))

    @classmethod
    def quick(cls) -> Settings:
        return cls(n_model_cells=500, batch_size=2, lengths=(1024, 256), warmup_steps=1, timed_steps=1, curve_steps=6,
                   curve_length=64, tokenizer_repeats=1, inference_cells=(("cpu", 128), ("v1", 16)))


# -- data and models ---------------------------------------------------------------------------
def load_control():
    """The Kang 2018 control cells (counts)."""
    import anndata as ad

    base = data_dir()
    if base is None or not (base / KANG_CTRL).exists():
        raise SystemExit(f"needs ../shared/data/{KANG_CTRL} (or $SCATTN_DATA_DIR)")
    return ad.read_h5ad(base / KANG_CTRL)


def build_model(adata, **kwargs):
    """A Geneformer on `adata` (registered here; every gene in the vocabulary)."""
    import scattn as sa

    sa.model.Geneformer.setup_anndata(adata)
    return sa.model.Geneformer(adata, **kwargs)


def make_batches(module, matrix, batch_size: int, n_batches: int, *, seed: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`n_batches` minibatches of random cells of `matrix` (CSR counts over the registered
    genes), grouped by length, as ``module.tokenize`` gives them: ``(ids, lengths, genes)``."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(matrix.shape[0], size=batch_size * n_batches, replace=False)
    n_expressed = np.diff(matrix.indptr)[rows]
    rows = rows[np.argsort(n_expressed, kind="stable")]
    groups = [rows[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]
    order = rng.permutation(n_batches)
    batches = []
    with torch.no_grad():
        for i in order:
            x = torch.as_tensor(matrix[np.sort(groups[i])].toarray(), dtype=torch.float32)
            batches.append(module.tokenize(x))
    return batches


def truncate(batch, length: int):
    """The same cells cut to their first `length` tokens (the top-ranked genes)."""
    ids, lengths, genes = batch
    return ids[:, :length].contiguous(), lengths.clamp(max=length), genes[:, :length].contiguous()


def hf_bert(vocab_size: int, *, attn: str, dropout: float, pad_id: int = 0):
    """``BertForMaskedLM`` with Geneformer V1's configuration."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=vocab_size, hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                        intermediate_size=512, hidden_act="relu", hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, max_position_embeddings=2048,
                        layer_norm_eps=1e-12, pad_token_id=pad_id, attn_implementation=attn)
    return BertForMaskedLM(config)


def attention_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    return (torch.arange(t)[None, :] < lengths[:, None]).long()


def adamw(params, lr: float):
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=1e-3)


# -- (a) throughput --------------------------------------------------------------------------------
def scattn_loss(module, ids, lengths, corrupted, chosen) -> torch.Tensor:
    """The module's masked objective on given corrupted ids (as ``inference`` + ``masked_loss``)."""
    h, _ = module.encoder(corrupted, lengths)
    return F.cross_entropy(module.mlm_head(h[chosen]), ids[chosen])


def hf_loss(bert, ids, lengths, corrupted, chosen) -> torch.Tensor:
    labels = ids.masked_fill(~chosen, -100)
    return bert(input_ids=corrupted, attention_mask=attention_mask(lengths, ids.shape[1]), labels=labels).loss


def throughput(module, berts: dict, batches, settings: Settings, length: int) -> list[dict]:
    """Tokens/s of every implementation on the same minibatches, interleaved step by step."""
    impls = {"scattn": (module, scattn_loss), **{f"transformers ({a})": (m, hf_loss) for a, m in berts.items()}}
    opts = {name: adamw(m.parameters(), 1e-4) for name, (m, _) in impls.items()}
    seconds = {name: 0.0 for name in impls}
    tokens = 0
    for step, batch in enumerate(batches):
        ids, lengths, genes = truncate(batch, length)
        timed = step >= settings.warmup_steps
        tokens += int(lengths.sum()) if timed else 0
        for name, (model, loss_fn) in impls.items():
            model.train()
            t0 = time.perf_counter()
            corrupted, chosen = module._mask_tokens(ids, genes, 0.15)
            loss = loss_fn(model, ids, lengths, corrupted, chosen)
            loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            if timed:
                seconds[name] += time.perf_counter() - t0
        print(f"  length {length}, step {step + 1}/{len(batches)}: {ids.shape[0]} x {ids.shape[1]} tokens "
              f"({int(lengths.sum())} real)", flush=True)
    n = len(batches) - settings.warmup_steps
    rows = [dict(part="a: pretraining", setting=f"max_length {length}, batch {settings.batch_size}",
                 implementation=name, value=tokens / seconds[name], unit="tokens/s",
                 detail=f"{n} timed steps after {settings.warmup_steps} warm-up; {seconds[name] / n:.2f} s/step")
            for name in impls]
    for name in berts:
        hf = tokens / seconds[f"transformers ({name})"]
        rows.append(dict(part="a: pretraining", setting=f"max_length {length}, batch {settings.batch_size}",
                         implementation=f"ratio scattn / transformers ({name})",
                         value=(tokens / seconds["scattn"]) / hf, unit="x", detail="tokens/s ratio"))
    return rows


# -- (b) loss curves --------------------------------------------------------------------------------
def loss_curves(adata, batches, settings: Settings) -> pd.DataFrame:
    """Loss per step of scattn's module and BertForMaskedLM from the same weights and inputs."""
    from scattn.model._geneformer_hf import load_into_module, module_state_from_bert

    length = settings.curve_length
    model = build_model(adata, preset="v1", dropout=0.0, attention_dropout=0.0, max_length=length)
    module = model.module
    torch.manual_seed(0)
    bert = hf_bert(module.vocab_size, attn="sdpa", dropout=0.0, pad_id=module.pad_id)
    emb = bert.bert.embeddings.token_type_embeddings
    with torch.no_grad():
        emb.weight.zero_()
    emb.weight.requires_grad_(False)
    load_into_module(module, module_state_from_bert(bert.state_dict(), n_layers=6, max_length=length))
    # the inputs and targets, drawn once
    torch.manual_seed(1)
    data = []
    for batch in batches:
        ids, lengths, genes = truncate(batch, length)
        corrupted, chosen = module._mask_tokens(ids, genes, 0.15)
        data.append((ids, lengths, corrupted, chosen))
    n = len(data)
    warm = max(1, n // 10)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay (scattn's pretraining)
        return (step + 1) / warm if step < warm else max(0.0, (n - step) / (n - warm + 1))

    curves = {}
    for name, model_, loss_fn in (("scattn", module, scattn_loss), ("transformers", bert, hf_loss)):
        params = [p for p in model_.parameters() if p.requires_grad]
        opt = adamw(params, settings.curve_lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        model_.train()
        losses = []
        t0 = time.perf_counter()
        for ids, lengths, corrupted, chosen in data:
            loss = loss_fn(model_, ids, lengths, corrupted, chosen)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        curves[name] = losses
        print(f"  loss curve {name}: {n} steps in {time.perf_counter() - t0:.1f} s, "
              f"loss {losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)
    out = pd.DataFrame({"step": np.arange(1, n + 1), "loss_scattn": curves["scattn"],
                        "loss_transformers": curves["transformers"]})
    out["abs_diff"] = (out["loss_scattn"] - out["loss_transformers"]).abs()
    return out


def plot_curves(curves: pd.DataFrame, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 5), sharex=True, height_ratios=(3, 1.3))
    ax.plot(curves["step"], curves["loss_transformers"], lw=3, alpha=0.5, label="transformers BertForMaskedLM")
    ax.plot(curves["step"], curves["loss_scattn"], lw=1.2, ls="--", color="k", label="scattn GeneformerModule")
    ax.set_ylabel("masked-LM loss")
    ax.legend(frameon=False)
    ax.set_title("Geneformer V1 from the same weights, inputs and AdamW\n(Kang 2018 PBMCs, dropout 0)",
                 fontsize=10)
    ax2.semilogy(curves["step"], curves["abs_diff"].clip(lower=1e-9), color="C3")
    ax2.set_ylabel("|difference|\n(0 drawn at 1e-9)", fontsize=9)
    ax2.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- (c) tokeniser, (d) inference ----------------------------------------------------------------------
def tokenizer_speed(model, matrix, repeats: int) -> dict:
    from scattn.data import rank_value_encode

    module = model.module
    n_special = len(module.special_tokens)
    token_ids = np.arange(module.genes.n_genes) + n_special
    medians = module.gene_medians.double().numpy()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rank_value_encode(matrix, token_ids, medians, max_length=2048, pad_id=module.pad_id,
                          cls_id=module.cls_id)
        times.append(time.perf_counter() - t0)
    dt = float(np.median(times))
    return dict(part="c: tokeniser", setting=f"{matrix.shape[0]} cells x {matrix.shape[1]} genes, 2048 tokens",
                implementation="scattn.data.rank_value_encode", value=matrix.shape[0] / dt, unit="cells/s",
                detail=f"median of {repeats}: {dt:.2f} s")


def inference_speed(model, preset: str, n_cells: int) -> dict:
    import scattn as sa

    idx = np.arange(n_cells)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained: the weights do not change the cost
        model.get_latent_representation(indices=idx[: min(8, n_cells)])  # warm-up
        t0 = time.perf_counter()
        model.get_latent_representation(indices=idx)
        dt = time.perf_counter() - t0
    return dict(part="d: inference", setting=f"preset {preset!r}, max_length {model.module.max_length}",
                implementation="Geneformer.get_latent_representation", value=n_cells / dt, unit="cells/s",
                detail=f"{n_cells} cells, batch {sa.settings.batch_size}, {dt:.1f} s")


# -- run -------------------------------------------------------------------------------------------------
def machine_load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def write(rows: list[dict], out: str, notes: list[str], *, final: bool = False) -> pd.DataFrame:
    """Write the rows so far (quietly unless `final`) with `notes` under the table."""
    table = pd.DataFrame(rows, columns=["part", "setting", "implementation", "value", "unit", "detail"])
    title = "Geneformer V1 on CPU: scattn vs transformers BertForMaskedLM" + ("" if final else " (partial)")
    sink = contextlib.nullcontext() if final else contextlib.redirect_stdout(io.StringIO())
    with sink:
        write_results(table, out, title)
    with open(f"{out}.md", "a") as fh:
        fh.write("\n" + "\n".join(f"* {n}" for n in notes) + "\n")
    return table


def main(argv=None) -> pd.DataFrame:
    import scanpy  # noqa: F401 (imported before the threads are pinned: it resets them)
    import transformers

    import scattn as sa

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer cells and steps (under 2 minutes): checks that "
                        "the script runs; one timed step is no measurement")
    parser.add_argument("--out", default=str(RESULTS / "geneformer_speed"))
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    out = args.out
    curves_out = os.path.join(os.path.dirname(out), "geneformer_loss_curves")
    logging.getLogger("scattn").setLevel(logging.WARNING)
    pin_threads()
    sa.settings.progress_bar = False
    sa.settings.seed = 0
    start = time.perf_counter()
    load_before = machine_load()
    notes = [f"{'--quick' if args.quick else 'default'} run; torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), transformers {transformers.__version__}",
             f"machine load before: `{load_before}`",
             "(a) tokens = real tokens (<cls> and genes, no padding); the three implementations train "
             "on the same minibatches, step by step in turn; transformers scores every position "
             "(labels -100 off the masked ones), scattn only the masked ones",
             "(a) dropout sits where BERT has it in both (attention weights, after each sub-layer)"]
    rows: list[dict] = []

    ctrl = load_control()
    ctrl.X = ctrl.X.tocsr()
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(ctrl.n_obs, size=min(settings.n_model_cells, ctrl.n_obs), replace=False))
    sub = ctrl[cells].copy()
    model = build_model(sub, preset="v1")
    module = model.module
    matrix = ctrl.X
    notes.append(f"vocabulary: {module.vocab_size} tokens (3 specials + the {module.genes.n_genes} genes), "
                 f"medians from {sub.n_obs} cells; minibatches from all {ctrl.n_obs} control cells")
    print(f"[{time.perf_counter() - start:.0f}s] V1 model on {sub.n_obs} cells, vocabulary {module.vocab_size}",
          flush=True)

    # (a)
    n_batches = settings.warmup_steps + settings.timed_steps
    batches = make_batches(module, matrix, settings.batch_size, n_batches, seed=1)
    torch.manual_seed(0)
    berts = {a: hf_bert(module.vocab_size, attn=a, dropout=0.02, pad_id=module.pad_id) for a in ("eager", "sdpa")}
    for length in settings.lengths:
        rows += throughput(module, berts, batches, settings, length)
        write(rows, out, notes)
        print(f"[{time.perf_counter() - start:.0f}s] throughput at {length} done", flush=True)
    del berts

    # (b)
    curve_batches = make_batches(module, matrix, settings.batch_size, settings.curve_steps, seed=2)
    curves = loss_curves(sub, curve_batches, settings)
    curves.to_csv(f"{curves_out}.csv", index=False)
    plot_curves(curves, f"{curves_out}.png")
    rows.append(dict(part="b: loss curves", setting=f"max_length {settings.curve_length}, batch "
                     f"{settings.batch_size}, {len(curves)} steps, lr {settings.curve_lr:g}, dropout 0",
                     implementation="largest abs. difference, scattn vs transformers",
                     value=float(curves["abs_diff"].max()), unit="loss",
                     detail=f"{curves['abs_diff'].max():.1e}; final loss {curves['loss_scattn'].iloc[-1]:.4f} "
                     f"vs {curves['loss_transformers'].iloc[-1]:.4f}"))
    write(rows, out, notes)
    print(f"[{time.perf_counter() - start:.0f}s] loss curves done", flush=True)

    # (c)
    rows.append(tokenizer_speed(model, matrix, settings.tokenizer_repeats))
    write(rows, out, notes)
    print(f"[{time.perf_counter() - start:.0f}s] tokeniser done", flush=True)

    # (d)
    for preset, n_cells in settings.inference_cells:
        m = model if preset == "v1" else build_model(sub, preset=preset)
        rows.append(inference_speed(m, preset, min(n_cells, sub.n_obs)))
        write(rows, out, notes)
        print(f"[{time.perf_counter() - start:.0f}s] inference {preset} done", flush=True)

    notes.append(f"machine load after: `{machine_load()}`; total {time.perf_counter() - start:.0f} s")
    table = write(rows, out, notes, final=True)
    return table


if __name__ == "__main__":
    main()
