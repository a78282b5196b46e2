"""The one error type of the map package: bad input, with a message that names the file, sample or vector."""

from __future__ import annotations


class MapDataError(ValueError):
    """A nuScenes tree, map expansion, split file, GT cache or prediction file that cannot be used.

    Commands print the message and exit with status 2; library callers catch it like a ``ValueError``.
    """
