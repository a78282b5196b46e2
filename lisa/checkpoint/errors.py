class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be loaded; the message names the file and keys."""


def first(items, n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")
