"""``lisa data subset``: a subset of a LLaVA-format JSON (e.g. the TextVQA items of
``llava_v1_5_mix665k.json``, 1,000 of them), written as a new file of the same format.

Records are kept when their ``"image"`` path contains one of the ``--contains`` substrings (any of
them; text-only records have no image and never match), text-only records are dropped with
``--drop_text_only``, then ``--sample N`` draws N of the kept records without replacement from a
generator seeded with ``--seed`` (the same seed gives the same subset). The records keep their
order in the input file and are written unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .files import load_json_or_fail
from .problems import DataError
from .vqa import is_text_only


@dataclass
class SubsetCounts:
    read: int = 0
    text_only: int = 0
    matched: int | None = None  # records whose image path contains a --contains string
    after_filter: int = 0
    written: int = 0
    per_pattern: dict[str, int] = field(default_factory=dict)


def subset_records(records: list, contains: list[str] | tuple[str, ...] = (), sample: int | None = None,
                   seed: int = 0, drop_text_only: bool = False) -> tuple[list, SubsetCounts]:
    """The kept records (in input order) and the counts of each stage."""
    if sample is not None and sample < 1:
        raise ValueError(f"--sample must be >= 1, got {sample}")
    counts = SubsetCounts(read=len(records))
    counts.text_only = sum(1 for r in records if is_text_only(r))
    kept = list(records)
    if contains:
        counts.per_pattern = {p: 0 for p in contains}

        def image_of(rec) -> str:
            image = rec.get("image") if isinstance(rec, dict) else None
            return image if isinstance(image, str) else ""

        for rec in kept:
            for p in contains:
                counts.per_pattern[p] += p in image_of(rec)
        kept = [r for r in kept if any(p in image_of(r) for p in contains)]
        counts.matched = len(kept)
    if drop_text_only:
        kept = [r for r in kept if not is_text_only(r)]
    counts.after_filter = len(kept)
    if sample is not None and sample < len(kept):
        chosen = np.random.default_rng(seed).choice(len(kept), size=sample, replace=False)
        kept = [kept[int(i)] for i in np.sort(chosen)]
    counts.written = len(kept)
    return kept, counts


def write_json(records: list, path: str) -> None:
    """Write atomically (a temporary file in the same folder, then renamed), so an interrupted run
    never leaves a truncated file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".subset-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(records, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def format_counts(counts: SubsetCounts, args) -> str:
    lines = [f"read {counts.read} records from {args.input} ({counts.read - counts.text_only} with an image, "
             f"{counts.text_only} text only)"]
    for p, n in counts.per_pattern.items():
        lines.append(f"  image path contains {p!r}: {n}")
    if counts.matched is not None:
        lines.append(f"kept by --contains: {counts.matched}")
    if args.drop_text_only:
        lines.append(f"after --drop_text_only: {counts.after_filter}")
    if args.sample is not None:
        note = "" if args.sample <= counts.after_filter else f" (only {counts.after_filter} to draw from: all kept)"
        lines.append(f"--sample {args.sample} --seed {args.seed}: {counts.written}{note}")
    lines.append(f"wrote {counts.written} records to {args.out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lisa data subset", description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("input", metavar="IN.json", help="LLaVA-format JSON (a list of records)")
    p.add_argument("--out", required=True, metavar="OUT.json", help="file to write")
    p.add_argument("--contains", action="append", default=[], metavar="TEXT",
                   help="keep records whose image path contains TEXT (repeat for any of several)")
    p.add_argument("--sample", type=int, default=None, metavar="N", help="draw N of the kept records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop_text_only", action="store_true", help="drop records without an image")
    args = p.parse_args(argv)
    try:
        if not os.path.isfile(args.input):
            raise DataError(f"{args.input}: file not found")
        records = load_json_or_fail(args.input, "subset")
        if not isinstance(records, list):
            raise DataError(f"{args.input}: expected a JSON list of LLaVA records, got {type(records).__name__}")
        kept, counts = subset_records(records, args.contains, args.sample, args.seed, args.drop_text_only)
        write_json(kept, args.out)
    except (DataError, ValueError, OSError) as e:
        print(f"lisa data subset: {e}", file=sys.stderr)
        return 2
    print(format_counts(counts, args))
    return 0
