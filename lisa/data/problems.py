"""Bad-input accounting for the data layer.

A reader that meets a problem with one sample (missing image, unreadable file, malformed JSON or
polygon, class id out of range, ...) raises :class:`SampleProblem`. The dataset catches it, records
it in a :class:`ProblemCounter` and draws another sample; with ``strict=True`` (``--strict_data``)
the counter turns the first problem into a :class:`DataError` that names the file.

The counts live in a small shared-memory tensor with one row per process (main process = row 0,
DataLoader worker ``k`` = row ``k + 1``), so the totals seen by ``stats()`` in the training process
include what its workers met, also with persistent workers. Each row also keeps the first path met
for every kind, so the report can point at a file whichever process saw it.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger("lisa.data")

KINDS: tuple[str, ...] = (
    "missing_file",  # an image / label / annotation file that the index names is not on disk
    "unreadable",  # the file exists but cannot be decoded (or has the wrong image mode)
    "bad_json",  # malformed JSON, or a record without the fields the format needs
    "bad_polygon",  # a polygon / RLE that cannot be rasterised, or that rasterises to nothing
    "bad_class",  # a class / category / annotation id that is not defined
    "size_mismatch",  # a label map or annotation whose size differs from the image
    "no_target",  # an image with nothing to ask about (only ignore pixels, no target polygon, ...)
    "truncated",  # a conversation dropped by collation because its [SEG] / answer would be cut
    "label_mismatch",  # the instruction-masking walk disagreed with the tokenized length
)

_ROWS = 65  # main process + 64 DataLoader workers (worker ids beyond wrap around)
_PATH_BYTES = 240
_WARN_PER_KIND = 3  # logged warnings per kind and process before going quiet


class DataError(RuntimeError):
    """A data problem that stops the run: missing dataset, unusable layout, or --strict_data."""


class SampleProblem(Exception):
    """One sample cannot be used. ``kind`` is one of :data:`KINDS`."""

    def __init__(self, kind: str, path: str, message: str):
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        super().__init__(f"{path}: {message}")
        self.kind = kind
        self.path = str(path)
        self.message = message


def _row() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else 1 + info.id % (_ROWS - 1)


class ProblemCounter:
    """Counts :class:`SampleProblem` by kind across the main process and its DataLoader workers."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self._counts = torch.zeros(_ROWS, len(KINDS), dtype=torch.int64).share_memory_()
        self._first = torch.zeros(_ROWS, len(KINDS), _PATH_BYTES, dtype=torch.uint8).share_memory_()
        self._warned: dict[str, int] = {}
        self._examples: dict[str, list[str]] = {}  # this process only, for the check command

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_warned"], state["_examples"] = {}, {}
        return state

    def add(self, problem: SampleProblem) -> None:
        """Record a problem, or raise it as a :class:`DataError` in strict mode."""
        if self.strict:
            raise DataError(f"{problem.path}: {problem.message} [{problem.kind}] "
                            "(--strict_data stops at the first data problem)") from problem
        k = KINDS.index(problem.kind)
        row = _row()
        if int(self._counts[row, k]) == 0:
            raw = problem.path.encode("utf-8", "replace")[:_PATH_BYTES]
            self._first[row, k, : len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        self._counts[row, k] += 1
        examples = self._examples.setdefault(problem.kind, [])
        if len(examples) < 5 and problem.path not in examples:
            examples.append(problem.path)
        n = self._warned.get(problem.kind, 0)
        if n < _WARN_PER_KIND:
            self._warned[problem.kind] = n + 1
            more = " (further ones of this kind are counted silently)" if n + 1 == _WARN_PER_KIND else ""
            logger.warning("skipping a sample [%s] %s: %s%s", problem.kind, problem.path,
                           problem.message, more)

    def count(self, kind: str, path: str, message: str) -> None:
        self.add(SampleProblem(kind, path, message))

    def stats(self) -> dict[str, int]:
        """Problem counts by kind, summed over this process and its workers."""
        totals = self._counts.sum(dim=0).tolist()
        return {kind: int(n) for kind, n in zip(KINDS, totals)}

    def total(self) -> int:
        return int(self._counts.sum())

    def examples(self, kind: str, limit: int = 3) -> list[str]:
        """The first paths met for ``kind`` (this process first, then one per worker)."""
        out = list(self._examples.get(kind, []))
        k = KINDS.index(kind)
        for row in range(_ROWS):
            if int(self._counts[row, k]) == 0:
                continue
            raw = bytes(self._first[row, k].tolist()).rstrip(b"\0").decode("utf-8", "replace")
            if raw and raw not in out:
                out.append(raw)
        return out[:limit]

    def reset(self) -> None:
        self._counts.zero_()
        self._first.zero_()
        self._examples.clear()

    def report(self) -> str:
        """One line per kind that occurred, e.g. for the end-of-epoch log."""
        parts = []
        for kind, n in self.stats().items():
            if n:
                parts.append(f"{kind}={n} (e.g. {', '.join(self.examples(kind, 2))})")
        return "data problems: " + ("; ".join(parts) if parts else "none")
