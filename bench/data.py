"""Data-loader throughput: training samples per second through HybridDataset + collate.

    python bench/data.py                       # fixture tree, 0 and 2 workers, SAM 1024 / CLIP 224
    python bench/data.py --dataset_dir ./dataset --workers 0,4,8 --samples 256

Each run iterates a fresh DataLoader (worker start-up included) over ``--samples`` items of the
default mixture (``sem_seg||refer_seg||vqa||reason_seg`` at 9,3,3,1) with the real collation
(tokenization and label masking). The median over ``--runs`` is printed, with the range.
Without ``--dataset_dir`` the fixture tree of ``tests/helpers/fixtures.py`` is written to a temporary folder
(images are tiny, so this mostly measures the fixed per-sample cost: SAM/CLIP resizing and
normalisation, mask decoding, prompt building, tokenization).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lisa.data import build_train_dataset, worker_init_fn
from lisa.data.collate import make_collate_fn
from lisa.tokenization import add_lisa_tokens, load_tokenizer, train_llama_style_tokenizer

ORACLE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tokenizer_oracle" / "lisa7b_like"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' fixture tree writer

from helpers.fixtures import write_fixture_tree  # noqa: E402


def tokenizer(path: str | None, tmp: str):
    if path:
        tok = load_tokenizer(path)
    elif ORACLE.is_dir():
        tok = load_tokenizer(ORACLE)
    else:
        tok = train_llama_style_tokenizer(["Can you segment the wall in this image? It is [SEG]."] * 4, 400, tmp)
    add_lisa_tokens(tok)
    return tok


def run_once(ds, collate_fn, workers: int, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_fn, worker_init_fn=worker_init_fn)
    start = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch["images"].shape[0]
    return n / (time.perf_counter() - start)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_dir", default=None, help="default: write the fixture tree to a temp folder")
    p.add_argument("--dataset", default="sem_seg||refer_seg||vqa||reason_seg")
    p.add_argument("--sample_rates", default="9,3,3,1")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the test oracle)")
    p.add_argument("--workers", default="0,2")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--sam_size", type=int, default=1024)
    p.add_argument("--clip_size", type=int, default=224)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # what each DataLoader worker gets; keeps 0 and N workers comparable

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dataset_dir
        if root is None:
            root = str(Path(tmp) / "dataset")
            write_fixture_tree(root)
        tok = tokenizer(args.tokenizer, str(Path(tmp) / "tok"))
        ds = build_train_dataset({"dataset_dir": root, "dataset": args.dataset,
                                  "sample_rates": args.sample_rates},
                                 clip_size=args.clip_size, sam_size=args.sam_size,
                                 samples_per_epoch=args.samples)
        collate_fn = make_collate_fn(tok, counter=ds.counter)
        print(f"data: {root}  samples/run: {args.samples}  batch: {args.batch_size}  "
              f"SAM {args.sam_size} / CLIP {args.clip_size}  runs: {args.runs}")
        for workers in [int(w) for w in args.workers.split(",")]:
            rates = []
            for run in range(args.runs):
                ds.set_epoch(run)
                rates.append(run_once(ds, collate_fn, workers, args.batch_size))
            print(f"workers={workers}: median {statistics.median(rates):7.1f} samples/s  "
                  f"(min {min(rates):.1f}, max {max(rates):.1f})")
        print(ds.counter.report())


if __name__ == "__main__":
    main()
