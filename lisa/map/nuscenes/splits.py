"""Which scenes make a split: the official nuScenes lists, or a user's split file.

The official lists are those of the nuScenes devkit: ``mini_train`` (8 scenes) and ``mini_val`` (2) of
v1.0-mini, ``train`` (700) and ``val`` (150) of v1.0-trainval. They are stored below as ranges of scene
numbers (``scene-0001`` is 1); a test checks their sizes. ``--split train`` on a v1.0-mini tree means
``mini_train``, as MapTR's data preparation does.

A split file is JSON ``{"train": [scene names], "val": [...]}`` (any split names); custom or partial
trees, and the synthetic tree (``D/split.json``), use one.
"""

from __future__ import annotations

import json
from pathlib import Path

from lisa.map.errors import MapDataError

_MINI = {
    "mini_train": "61 553 655 757 796 1077 1094 1100",
    "mini_val": "103 916",
}
_TRAINVAL = {
    "train": (
        "1-2 4-11 19-34 41-76 120-135 138-139 149-152 154-155 157-168 170-185 187-188 190-196 199-200 "
        "202-204 206-214 218-220 222 224-264 283-306 315-318 321 323-324 328 347-386 388-403 405-408 "
        "410-459 461-465 467-469 471-472 474-480 499-502 504-515 517-518 525-539 541-546 566 568 570-578 "
        "580 582-600 639-679 681 683-689 695-698 700-701 703-719 726-728 730-731 733-741 744 746-747 "
        "749-752 757-765 767-769 786-787 789-792 803-806 808-813 815-817 819-822 847-856 858 860-866 "
        "868-873 875-878 880 882-903 945 947 949 952-953 955-961 975-984 988-992 994-1025 1044-1058 "
        "1074-1102 1104-1110"
    ),
    "val": (
        "3 12-18 35-36 38-39 92-110 221 268-278 329-332 344-346 519-524 552-565 625-627 629-630 632-638 "
        "770-771 775 777-778 780-784 794-800 802 904-917 919-931 962-963 966-969 971-972 1059-1073"
    ),
}
# --split NAME on a version -> the official list it means
_ALIASES = {
    "v1.0-mini": {"train": "mini_train", "val": "mini_val", "mini_train": "mini_train", "mini_val": "mini_val"},
    "v1.0-trainval": {"train": "train", "val": "val"},
}


def _expand(ranges: str) -> list[str]:
    names = []
    for part in ranges.split():
        lo, _, hi = part.partition("-")
        names += [f"scene-{n:04d}" for n in range(int(lo), int(hi or lo) + 1)]
    return names


def official_split(name: str) -> list[str]:
    """Scene names of an official split (``mini_train``, ``mini_val``, ``train``, ``val``)."""
    table = {**_MINI, **_TRAINVAL}
    if name not in table:
        raise MapDataError(f"no official nuScenes split {name!r} (known: {', '.join(table)})")
    return _expand(table[name])


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """A split file: ``{"train": [scene names], "val": [...]}``; every value a list of strings."""
    path = Path(path)
    if not path.is_file():
        raise MapDataError(f"split file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapDataError(f"split file {path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise MapDataError(f'split file {path} must hold {{"train": [scene names], "val": [...]}}')
    for key, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise MapDataError(f"split file {path}: {key!r} must be a list of scene names")
    return data


def split_scenes(version: str, split: str, split_file: str | Path | None = None) -> list[str]:
    """Scene names of ``split`` for a tree of ``version``: from ``split_file`` when given, else official."""
    if split_file is not None:
        splits = read_split_file(split_file)
        if split not in splits:
            raise MapDataError(f"split file {split_file} has no split {split!r} (it has: {', '.join(splits)})")
        return list(splits[split])
    official = _ALIASES.get(version, {}).get(split)
    if official is None:
        known = ", ".join(_ALIASES.get(version, {})) or "none"
        raise MapDataError(
            f"no official {split!r} split for {version} (official splits of {version}: {known}); "
            f'pass --split_file FILE.json with {{"{split}": [scene names]}}')
    return official_split(official)
