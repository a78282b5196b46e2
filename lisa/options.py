"""``CommandOptions``: the base of a command's typed options, a dataclass whose fields are its flags.

``lisa train`` (:mod:`lisa.train.options`) and ``lisa map train`` (:mod:`lisa.map.train.options`)
each build an argparse parser whose destinations are their dataclass's field names; this turns the
parsed namespace into the dataclass and the dataclass back into plain data for run folders and logs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields


class CommandOptions:
    """Mixed into a ``@dataclass``: fields with ``init=False`` are derived values, not flags."""

    @classmethod
    def flag_names(cls) -> list[str]:
        """The options that are command-line flags (every field but the derived ones)."""
        return [f.name for f in fields(cls) if f.init]

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace):
        """The options a parsed command line holds; anything else in ``ns`` is not an option."""
        values = vars(ns)
        return cls(**{name: values[name] for name in cls.flag_names()})

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)
