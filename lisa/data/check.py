"""``lisa data check``: walk the layout the training flags would read and report what is there.

For every requested sub-dataset: found / missing (with the exact folder or file it expected),
number of images (records) and samples (questions), and the problems found with the first few
paths. Shallow by default (files exist, headers and annotation files parse, polygons are valid,
ids resolve); ``deep`` also decodes every image and label map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tqdm import tqdm

from .base import Source
from .hybrid import DEFAULTS, FAMILIES
from .problems import KINDS, DataError, ProblemCounter, SampleProblem
from .reason_seg import ReasonSegSource
from .refer_seg import ReferSource
from .sem_seg import sem_seg_source
from .validation import ValDataset
from .vqa import VQASource, vqa_json_path

OK, PROBLEMS, UNUSABLE, MISSING, OPTIONAL = "ok", "ok, with problems", "unusable", "missing", "missing (optional)"


@dataclass
class Row:
    family: str
    name: str
    status: str = OK
    images: int = 0
    samples: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    detail: str = ""  # for a missing dataset: what was expected where

    @property
    def fails(self) -> bool:
        return self.status in (UNUSABLE, MISSING)


def _get(args, name):
    if isinstance(args, dict):
        return args.get(name, DEFAULTS.get(name))
    return getattr(args, name, DEFAULTS.get(name))


def _split(value) -> list[str]:
    return [v for v in str(value).split("||") if v]


def _sources(args):
    """(family, name, builder) for everything the flags would read."""
    root = _get(args, "dataset_dir")
    rates = [r for r in str(_get(args, "sample_rates")).split(",")]
    families = _split(_get(args, "dataset"))
    out = []
    for k, family in enumerate(families):
        if k < len(rates) and _is_zero(rates[k]):
            continue
        if family == "sem_seg":
            for n in _split(_get(args, "sem_seg_data")):
                out.append((family, n, lambda n=n: sem_seg_source(root, n)))
        elif family == "refer_seg":
            for n in _split(_get(args, "refer_seg_data")):
                out.append((family, n, lambda n=n: ReferSource(root, n)))
        elif family == "vqa":
            folder = _get(args, "image_folder") or f"{root}/coco/train2017"
            for n in _split(_get(args, "vqa_data")):
                out.append((family, n, lambda n=n: VQASource(vqa_json_path(root, n), folder)))
        elif family == "reason_seg":
            for n in _split(_get(args, "reason_seg_data")):
                out.append((family, n, lambda n=n: ReasonSegSource(root, n, float(_get(args, "explanatory")))))
        else:
            out.append((family, family, lambda family=family: _unknown(family)))
    return out


def _is_zero(rate: str) -> bool:
    try:
        return float(rate) == 0
    except ValueError:
        return False


def _unknown(family: str):
    raise DataError(f"unknown --dataset entry {family!r}; expected some of {FAMILIES}")


def _walk(source: Source, row: Row, deep: bool, progress: bool) -> None:
    counter = ProblemCounter()
    usable = 0
    for i in tqdm(range(len(source)), desc=f"checking {row.name}", disable=not progress, leave=False):
        try:
            row.samples += source.inspect(i, deep=deep)
            usable += 1
        except SampleProblem as p:
            counter.add(p)
    row.images = len(source)
    for extra_kind, paths in _index_problems(source):
        for path in paths:
            counter.add(SampleProblem(extra_kind, path, "malformed index entry"))
    stats = counter.stats()
    row.problems = {k: n for k, n in stats.items() if n}
    row.examples = {k: counter.examples(k) for k in row.problems}
    if usable == 0:
        row.status = UNUSABLE
        row.detail = f"no usable record among {len(source)}"
    elif row.problems:
        row.status = PROBLEMS


def _index_problems(source: Source):
    index = getattr(source, "index", None)
    if index is not None and index.bad_refs:
        yield "bad_json", [f"{index.refs_file} ({r})" for r in index.bad_refs]
    orphans = getattr(source, "orphans", None)
    if orphans:
        yield "bad_class", [f"{source.json_path} (annotations of unknown image {i})" for i in orphans]


def _explanatory_row(args) -> Row | None:
    if float(_get(args, "explanatory")) == -1 or "reason_seg" not in _split(_get(args, "dataset")):
        return None
    from .reason_seg import load_explanations, parse_spec

    root = _get(args, "dataset_dir")
    specs = _split(_get(args, "reason_seg_data"))
    ds = parse_spec(specs[0])[0] if specs else "ReasonSeg"
    path = f"{root}/reason_seg/{ds}/explanatory/train.json"
    row = Row("reason_seg", "explanatory")
    try:
        explanations, problems = load_explanations(path)
    except SampleProblem as p:
        row.status = OPTIONAL if p.kind == "missing_file" else UNUSABLE
        row.detail = f"expected the file {path}" if p.kind == "missing_file" else str(p)
        return row
    row.images = row.samples = len(explanations)
    if problems:
        row.status, row.problems, row.examples = PROBLEMS, {"bad_json": len(problems)}, {"bad_json": problems[:3]}
    return row


def _val_rows(args, progress: bool) -> list[Row]:
    if _get(args, "no_eval"):
        return []
    rows = []
    for name in _split(_get(args, "val_dataset") or "ReasonSeg|val"):
        row = Row("validation", name)
        counter = ProblemCounter()
        try:
            val = ValDataset(_get(args, "dataset_dir"), name, counter=counter)
        except DataError as e:
            row.status, row.detail = (MISSING if "does not exist" in str(e) or "not found" in str(e)
                                      else UNUSABLE), str(e)
            rows.append(row)
            continue
        row.images = len(val)
        row.samples = sum(len(val.source.records[i][1]) if val.kind == "refer_seg" else 1
                          for i in val.records)
        row.problems = {k: n for k, n in counter.stats().items() if n}
        row.examples = {k: counter.examples(k) for k in row.problems}
        row.status = PROBLEMS if row.problems else OK
        rows.append(row)
    return rows


def check_layout(args, deep: bool = False, progress: bool = True) -> list[Row]:
    """One :class:`Row` per sub-dataset (training families, explanations, validation sets)."""
    quiet = logging.getLogger("lisa.data")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the table reports every skipped record; no per-record warnings
    try:
        return _check_layout(args, deep, progress)
    finally:
        quiet.setLevel(level)


def _check_layout(args, deep: bool, progress: bool) -> list[Row]:
    rows = []
    for family, name, build in _sources(args):
        row = Row(family, name)
        try:
            source = build()
        except DataError as e:
            row.status, row.detail = MISSING, str(e)
            rows.append(row)
            continue
        _walk(source, row, deep, progress)
        rows.append(row)
    extra = _explanatory_row(args)
    if extra is not None:
        rows.append(extra)
    rows.extend(_val_rows(args, progress))
    return rows


def format_table(rows: list[Row], examples: int = 3) -> str:
    head = ("family", "dataset", "status", "images", "samples", "problems")
    cells = [head] + [(r.family, r.name, r.status, str(r.images), str(r.samples),
                       str(sum(r.problems.values()))) for r in rows]
    widths = [max(len(c[k]) for c in cells) for k in range(len(head))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(v.ljust(widths[k]) if k < 3 else v.rjust(widths[k])
                               for k, v in enumerate(c)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
            continue
        r = rows[n - 1]
        if r.detail:
            lines.append(f"    {r.detail}")
        for kind in KINDS:
            if kind in r.problems:
                paths = ", ".join(r.examples.get(kind, [])[:examples])
                lines.append(f"    {kind}: {r.problems[kind]} (e.g. {paths})")
    return "\n".join(lines)
