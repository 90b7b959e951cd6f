"""Cost of CGRAN's group-wise local attention against the dense masked form.

For g in 500, 1000, 2000, 4000 genes, one first-block attention layer (10 heads, head dim 8,
m = 128, groups of 100 genes) runs forward + backward on the same batch of cells, once as
scattn computes it (group by group, :class:`scattn.nn.LocalMultiheadAttention`), and twice as
one (g+1) x (g+1) attention with the group mask H: through PyTorch's fused kernel with the
mask (:func:`scattn.nn.dense_masked_attention`, the strongest dense baseline, which never
stores the score matrix) and explicitly as the paper writes eq. 7 (scores, mask, softmax). Each
measurement runs in a fresh process: time is the median of 3 repeats after a warm-up, peak
memory the growth of the process' peak RSS (CPU) or ``torch.cuda.max_memory_allocated``
(GPU) over the inputs alone.

    python -m benchmarks.studies.cgran_attention_cost [--batch 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pandas as pd

from .._common import RESULTS, write_results

WORKER = r"""
import json, resource, sys, time
import torch
from scattn.nn import GeneGroups, LocalMultiheadAttention, dense_masked_attention
from scattn.data import make_gene_groups, group_mask
mode, g, batch, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
att = LocalMultiheadAttention(128, 10, 8).to(device)
gi = make_gene_groups(g, "uniform", group_size=100)
groups = GeneGroups(torch.tensor(gi)).to(device)
cell = torch.randn(batch, 128, device=device, requires_grad=True)
genes = torch.randn(batch, g, 128, device=device, requires_grad=True)
mask = torch.tensor(group_mask(gi, g), device=device) if mode != "local" else None
def explicit(cell, genes):
    # eq. 7 as written: full (g+1)^2 scores, the mask H, softmax, then the values
    tokens = torch.cat([cell.unsqueeze(1), genes], 1)
    q, k, v = (t.unflatten(-1, (10, 8)).transpose(1, 2) for t in att.qkv(tokens).chunk(3, -1))
    scores = (q @ k.transpose(-1, -2)) / 8 ** 0.5
    w = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    out = (w @ v).transpose(1, 2).flatten(-2)
    return out[:, 0], out[:, 1:]
def step():
    if mode == "local":
        c, x, _ = att(cell, genes, groups=groups)
    elif mode == "dense_fused":
        c, x = dense_masked_attention(att, cell, genes, mask)
    else:
        c, x = explicit(cell, genes)
    (c.sum() + x.sum()).backward()
    if device == "cuda":
        torch.cuda.synchronize()
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
step()
if device == "cuda":
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
else:
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
times = []
for _ in range(3):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"mode": mode, "genes": g, "batch": batch, "device": device, "time_s": times[1], "peak_mib": peak}))
"""


EXPLICIT_LIMIT_GIB = 8.0


def measure(mode: str, g: int, batch: int, device: str) -> dict:
    # the explicit form keeps ~4 float32 (B, H, g+1, g+1) tensors for backward
    need = 4 * batch * 10 * (g + 1) ** 2 * 4 / 2**30
    if mode == "dense_explicit" and need > EXPLICIT_LIMIT_GIB:
        return {"mode": mode, "genes": g, "batch": batch, "device": device,
                "time_s": float("nan"), "peak_mib": float("nan"),
                "note": f"skipped: needs ~{need:.0f} GiB"}
    out = subprocess.run([sys.executable, "-c", WORKER, mode, str(g), str(batch), device],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--genes", nargs="*", type=int, default=[500, 1000, 2000, 4000])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for g in args.genes:
        for mode in ("local", "dense_fused", "dense_explicit"):
            rows.append(measure(mode, g, args.batch, args.device))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    wide = df.pivot(index="genes", columns="mode", values=["time_s", "peak_mib"])
    t, m = wide["time_s"], wide["peak_mib"]
    table = pd.DataFrame({
        "genes": wide.index,
        "local_s": t["local"].to_numpy(),
        "dense_fused_s": t["dense_fused"].to_numpy(),
        "dense_explicit_s": t["dense_explicit"].to_numpy(),
        "speedup_vs_fused": (t["dense_fused"] / t["local"]).to_numpy(),
        "speedup_vs_explicit": (t["dense_explicit"] / t["local"]).to_numpy(),
        "local_mib": m["local"].to_numpy(),
        "dense_fused_mib": m["dense_fused"].to_numpy(),
        "dense_explicit_mib": m["dense_explicit"].to_numpy(),
    })
    table["genes"] = table["genes"].astype(int)
    out = args.out or str(RESULTS / f"cgran_attention_cost_{args.device}_batch{args.batch}")
    write_results(table, out, f"Local vs dense masked attention, forward+backward, batch {args.batch}, {args.device}")
    return table


if __name__ == "__main__":
    main()
