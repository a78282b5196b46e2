"""Batched decoding (the server's path): time per step and CPU time of its eager step through the decoder
layers directly (the default off CUDA), the decoder's forward, and the static-cache rows (the default
on CUDA, with its step a CUDA graph; on a CPU without a graph), on the same batch.

    python bench/batch_decode.py --preset medium --batch 4 --threads 2

Random weights (latency does not depend on the values); prompts of different lengths, so the batch
is left-padded and masked; every row decodes --tokens steps (no early end). Runs alternate between
the two paths, so a change in the machine's load touches both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from inference import PRESETS, build  # bench/ is on sys.path when run as a script

from lisa.constants import IMAGE_TOKEN_INDEX
from lisa.model.batch_generation import BatchItem, generate_batch
from lisa.model.generation import use_decoding_layout
from lisa.model.static_decode import FastDecoding


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="medium")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.preset, torch.float32, args.device)
    use_decoding_layout(model)  # as LisaPipeline does
    rng = np.random.default_rng(0)
    feats = torch.randn(model.config.num_image_tokens, model.config.hidden_size, device=args.device)
    items = [BatchItem([1] + rng.integers(3, 300, 20 + 7 * i).tolist() + [IMAGE_TOKEN_INDEX, 5, 6], feats,
                       args.tokens) for i in range(args.batch)]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"preset={args.preset} batch={args.batch} tokens={args.tokens} threads={torch.get_num_threads()} "
          f"load average={load}")
    cuda = torch.device(args.device).type == "cuda"
    fast = FastDecoding.for_model(model) if cuda else FastDecoding(model)
    t0 = time.perf_counter()
    generate_batch(model, items, eos_token_id=None)  # warm-up
    generate_batch(model, items, eos_token_id=None, fast=fast)  # makes (on CUDA: records) the rows
    print(f"warm-up {time.perf_counter() - t0:.1f} s")
    static_name = "static rows" + (" + graph" if cuda else "")
    rows = {"layer step": [], "decoder forward": [], static_name: []}
    for _ in range(args.runs):
        for name in rows:
            c = time.process_time()
            out = generate_batch(model, items, eos_token_id=None, use_layer_step=name != "decoder forward",
                                 fast=fast if name == static_name else None)
            if cuda:
                torch.cuda.synchronize()
            rows[name].append((statistics.median(out[0].token_times[1:]), time.process_time() - c))
    print(f"{'':<18}{'ms per step':>12}{'CPU s per batch':>17}")
    for name, v in rows.items():
        step, cpu = statistics.median(s for s, _ in v), statistics.median(c for _, c in v)
        print(f"{name:<18}{step * 1000:>12.2f}{cpu:>17.2f}")
    a, b, c = (statistics.median(s for s, _ in rows[k]) for k in ("decoder forward", "layer step", static_name))
    print(f"per-step speed-up over the decoder's forward: layer step {a / b:.2f}x, {static_name} {a / c:.2f}x")


if __name__ == "__main__":
    main()
