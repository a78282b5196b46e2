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


def _jsonable(obj, path: str):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, path) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v, path) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise DataError(f"{path}: cannot convert a {type(obj).__name__} value to JSON")


def json_path_for(pickle_path: str | os.PathLike) -> Path:
    p = Path(pickle_path)
    return p.with_name(p.name[: -len(p.suffix)] + ".json") if p.suffix == ".p" else p.with_suffix(".json")


def convert_refs(pickle_path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``refs(X).json`` next to ``refs(X).p`` (restricted unpickling); returns the JSON path."""
    out = json_path_for(pickle_path)
    if out.exists() and not overwrite:
        return out
    data = _jsonable(safe_load_pickle(pickle_path), os.fspath(pickle_path))
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
