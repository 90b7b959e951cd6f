"""Cost of CGRAN's group-wise local attention against the dense masked form.

For g in 500, 1000, 2000, 4000 genes, one first-block attention layer (10 heads, head dim 8,
m = 128, groups of 100 genes) runs forward + backward on the same batch of cells, once as
scattn computes it (group by group, :class:`scattn.nn.LocalMultiheadAttention`) and once as
the paper writes it (one (g+1) x (g+1) attention with the group mask H,
:func:`scattn.nn.dense_masked_attention`; PyTorch's fused kernel is used for both). Each
measurement runs in a fresh process: time is the median of 3 repeats after a warm-up, peak
memory the growth of the process' peak RSS (CPU) or ``torch.cuda.max_memory_allocated``
(GPU) over the inputs alone.

    python -m benchmarks.cgran_attention_cost [--batch 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pandas as pd

from ._common import RESULTS, markdown_table

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
mask = torch.tensor(group_mask(gi, g), device=device) if mode == "dense" else None
def step():
    if mode == "local":
        c, x, _ = att(cell, genes, groups=groups)
    else:
        c, x = dense_masked_attention(att, cell, genes, mask)
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


def measure(mode: str, g: int, batch: int, device: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, mode, str(g), str(batch), device],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--genes", nargs="*", type=int, default=[500, 1000, 2000, 4000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for g in args.genes:
        for mode in ("local", "dense"):
            rows.append(measure(mode, g, args.batch, args.device))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    wide = df.pivot(index="genes", columns="mode", values=["time_s", "peak_mib"])
    table = pd.DataFrame({
        "genes": wide.index,
        "local_time_s": wide[("time_s", "local")].to_numpy(),
        "dense_time_s": wide[("time_s", "dense")].to_numpy(),
        "speedup": (wide[("time_s", "dense")] / wide[("time_s", "local")]).to_numpy(),
        "local_peak_mib": wide[("peak_mib", "local")].to_numpy(),
        "dense_peak_mib": wide[("peak_mib", "dense")].to_numpy(),
    })
    out = args.out or str(RESULTS / f"cgran_attention_cost_{args.device}")
    table.to_csv(f"{out}.csv", index=False)
    with open(f"{out}.md", "w") as fh:
        fh.write(f"# Local vs dense masked attention, forward+backward, batch {args.batch}, {args.device}\n\n")
        fh.write(markdown_table(table))
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
