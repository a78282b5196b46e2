"""Reading the REFER ``refs(*).p`` pickles without letting them run code.

The refs files are Python 2 pickles of plain lists / dicts / strings / numbers. ``pickle.load``
would import and call whatever the file names, so a tampered download could execute anything.
:func:`safe_load_pickle` only rebuilds plain containers, numbers and strings: every reference to a
class or function (the only way a pickle runs code) is refused with :class:`UnsafePickleError`,
except ``set`` / ``frozenset`` and the ``_codecs.encode(text, "latin1")`` form that protocol-2
pickles use for ``bytes``.

``lisa data convert-refs`` (:func:`convert_refs`) turns the pickles into ``refs(*).json`` next to
them once; readers prefer the JSON when it exists.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
from pathlib import Path

from .problems import DataError

logger = logging.getLogger("lisa.data")


class UnsafePickleError(DataError):
    """The pickle references a class or function, or a protocol feature outside plain data."""


def _latin1_encode(text, encoding="latin1", errors="strict"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


_ALLOWED = {
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode, ("codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._path = path

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refusing to load: the pickle references {module}.{name}, but a refs "
                "file may only contain plain lists, dicts, strings and numbers (the published refs files "
                "never reference code). Do not use this file: download it again from a trusted source."
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: refusing to load: the pickle uses persistent ids")


def safe_load_pickle(path: str | os.PathLike):
    """Load a pickle that holds only plain data. Python 2 ``str`` values come back as ``str``
    (UTF-8, or Latin-1 when a value is not valid UTF-8)."""
    path = os.fspath(path)
    raw = Path(path).read_bytes()
    last_error = None
    for encoding in ("utf-8", "latin1"):
        try:
            return _RestrictedUnpickler(io.BytesIO(raw), path, encoding).load()
        except UnsafePickleError:
            raise
        except UnicodeDecodeError as e:
            last_error = e
        except Exception as e:
            raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    raise DataError(f"{path}: cannot decode the strings in the pickle ({last_error})")


class _Budget:
    """What a conversion may write. A pickle can refer to one object many times (its memo), so a few
    hundred bytes can stand for a structure that expands to gigabytes ("billion laughs"): the
    expansion is counted as it is written and refused past ``limit`` characters."""

    def __init__(self, path: str, limit: int):
        self.path, self.limit, self.used = path, limit, 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise DataError(f"{self.path}: refusing to convert: the pickle expands to more than {self.limit} "
                            "characters of JSON (it refers to the same objects over and over, which the "
                            "published refs files do not). Do not use this file: download it again.")


def expansion_limit(pickle_bytes: int) -> int:
    """JSON characters a pickle of ``pickle_bytes`` may expand to: refs pickles convert to JSON of
    about their own size; this allows 16 times that, and 16 MiB for small files."""
    return 16 * 1024 * 1024 + 16 * int(pickle_bytes)


def _jsonable(obj, budget: _Budget, open_ids: set | None = None):
    open_ids = set() if open_ids is None else open_ids
    if isinstance(obj, (dict, list, tuple, set, frozenset)):
        if id(obj) in open_ids:  # the container holds itself
            raise DataError(f"{budget.path}: refusing to convert: the pickle holds a recursive structure (a "
                            "container inside itself), which JSON cannot express")
        open_ids.add(id(obj))
        budget.spend(2)
        try:
            if isinstance(obj, dict):
                out = {}
                for k, v in obj.items():
                    if not (k is None or isinstance(k, (str, int, float, bool, bytes))):
                        raise DataError(f"{budget.path}: cannot convert a {type(k).__name__} dict key to JSON")
                    key = str(k)
                    budget.spend(len(key) + 2)
                    out[key] = _jsonable(v, budget, open_ids)
                return out
            return [_jsonable(v, budget, open_ids) for v in obj]
        finally:
            open_ids.discard(id(obj))
    if isinstance(obj, bytes):
        obj = obj.decode("utf-8", errors="replace")
    if obj is None or isinstance(obj, (str, int, float, bool)):
        budget.spend(len(obj) + 2 if isinstance(obj, str) else 8)
        return obj
    raise DataError(f"{budget.path}: cannot convert a {type(obj).__name__} value to JSON")


def json_path_for(pickle_path: str | os.PathLike) -> Path:
    p = Path(pickle_path)
    return p.with_name(p.name[: -len(p.suffix)] + ".json") if p.suffix == ".p" else p.with_suffix(".json")


def convert_refs(pickle_path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``refs(X).json`` next to ``refs(X).p`` (restricted unpickling); returns the JSON path."""
    out = json_path_for(pickle_path)
    if out.exists() and not overwrite:
        return out
    budget = _Budget(os.fspath(pickle_path), expansion_limit(Path(pickle_path).stat().st_size))
    try:
        data = _jsonable(safe_load_pickle(pickle_path), budget)
    except RecursionError:
        raise DataError(f"{pickle_path}: refusing to convert: the structure nests too deeply") from None
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, out)
    return out


def load_refs_file(pickle_path: str | os.PathLike):
    """The refs list: from the converted JSON when it exists, else from the pickle (restricted)."""
    js = json_path_for(pickle_path)
    if js.exists():
        pk = Path(pickle_path)
        if pk.exists() and pk.stat().st_mtime > js.stat().st_mtime:
            logger.warning("%s is newer than %s; reading the JSON (run `lisa data convert-refs "
                           "--overwrite` to refresh it)", pk, js)
        try:
            return json.loads(js.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{js}: malformed JSON ({e}); delete it and run `lisa data convert-refs` "
                            "again") from None
    if not Path(pickle_path).exists():
        raise DataError(f"refs file not found: expected {pickle_path} (or {js})")
    return safe_load_pickle(pickle_path)
