"""Model ids of the Hugging Face Hub as every guide writes them, turned into local folders.

Every model argument (``--version``, ``--vision-tower``, a config's ``mm_vision_tower``, ...) takes
a local folder or a Hub id ``owner/name``, optionally pinned as ``owner/name@revision`` (a branch,
tag or commit). A local folder of that name always wins (relative paths included); otherwise
``huggingface_hub`` downloads what a checkpoint needs into the user's cache and the snapshot folder
is used. huggingface_hub itself reads ``HF_ENDPOINT`` (a mirror), ``HF_TOKEN``, ``HF_HOME`` /
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``; a later run reads the cache, also without a network.

Only the files a checkpoint needs are fetched: configs, weight indexes and tokenizer files, example
images, and one weight format per folder (safetensors when the folder has them, else ``.bin``; never
both, nor TensorFlow/Flax/GGUF copies or training state). Downloaded weights are read by the same
safe loaders as local ones (safetensors, or ``torch.load(weights_only=True)``).

For other rooms (the map detector's ``--llm_path`` and BLIP-2 source, for example):
``resolve_model(ref, revision=None) -> Path`` for a folder, ``resolve_file("owner/name/file.pth")``
for one file. Both raise :class:`CheckpointError` with a message that names the id.
"""

from __future__ import annotations

import contextlib
import glob
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import CheckpointError

SIDE_SUFFIXES = (".json", ".model", ".txt", ".tiktoken")  # configs, weight indexes, tokenizers, merges
WEIGHT_SUFFIXES = (".safetensors", ".bin")
EXTRA_DIRS = ("examples",)  # example images a model folder offers to front ends
# .bin files in checkpoint repositories that are not model weights
NOT_WEIGHTS = re.compile(r"^(training_args|optimizer|scheduler|rng_state.*)\.bin$")
_PART = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
HUB_ID = re.compile(rf"^(?P<repo>{_PART}/{_PART})(?:@(?P<rev>[^\s@]+))?$")
HUB_FILE = re.compile(rf"^(?P<repo>{_PART}/{_PART})(?:@(?P<rev>[^\s@/]+))?/(?P<file>[^\s@]+)$")


@dataclass(frozen=True)
class HubId:
    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_id(ref) -> HubId | None:
    """``owner/name`` or ``owner/name@revision`` as a :class:`HubId`; None for anything else."""
    m = HUB_ID.match(str(ref))
    if m is None or ".." in m["repo"] or "--" in m["repo"] or m["repo"].endswith("."):
        return None
    return HubId(m["repo"], m["rev"])


def needed_files(files: Iterable[str]) -> list[str]:
    """The files of a repository that a checkpoint folder needs (see the module doc)."""
    files = sorted(set(files))
    weights: dict[PurePosixPath, dict[str, list[str]]] = {}
    keep = []
    for f in files:
        p = PurePosixPath(f)
        if p.suffix in SIDE_SUFFIXES or (p.parts and p.parts[0] in EXTRA_DIRS):
            keep.append(f)
        elif p.suffix in WEIGHT_SUFFIXES and not NOT_WEIGHTS.match(p.name):
            weights.setdefault(p.parent, {}).setdefault(p.suffix, []).append(f)
    dropped_indexes = set()
    for folder, by_format in weights.items():
        chosen = ".safetensors" if ".safetensors" in by_format else ".bin"
        keep += by_format[chosen]
        if chosen == ".safetensors" and ".bin" in by_format:
            dropped_indexes.add(str(folder / "pytorch_model.bin.index.json").removeprefix("./"))
    return sorted(f for f in keep if f not in dropped_indexes)


def resolve_model(ref, *, revision: str | None = None, progress: bool = True) -> Path:
    """A local folder for ``ref``: the folder itself when it exists, else the Hub snapshot of the
    id ``ref`` (``owner/name[@revision]``; ``revision`` may also be given here)."""
    local = Path(str(ref)).expanduser()
    if local.exists():
        return local
    hub = _hub_id(ref, revision)
    if hub is None:
        raise CheckpointError(f"{ref}: checkpoint folder not found (nor is it a Hub id: owner/name[@revision])")
    return _snapshot(hub, str(ref), progress)


def resolve_file(ref, *, revision: str | None = None, progress: bool = True) -> Path:
    """A local file for ``ref``: the file itself when it exists, else ``owner/name[@revision]/path``
    downloaded from the Hub (e.g. ``owner/sam/sam_vit_h_4b8939.pth``)."""
    local = Path(str(ref)).expanduser()
    if local.exists():
        return local
    m = HUB_FILE.match(str(ref))
    hub = _hub_id(f"{m['repo']}@{m['rev']}" if m and m["rev"] else m["repo"], revision) if m else None
    if hub is None:
        raise CheckpointError(f"{ref}: file not found (nor is it a Hub file: owner/name[@revision]/path)")
    from huggingface_hub import hf_hub_download

    try:
        with _progress_bars(progress):
            return Path(hf_hub_download(hub.repo_id, m["file"], revision=hub.revision))
    except Exception as e:
        _raise_explained(e, hub, str(ref), m["file"])


def _hub_id(ref, revision: str | None) -> HubId | None:
    hub = parse_hub_id(ref)
    if hub is None:
        return None
    if revision and hub.revision and revision != hub.revision:
        raise CheckpointError(f"{ref}: two revisions given ({hub.revision!r} in the id, {revision!r} by flag)")
    return HubId(hub.repo_id, revision or hub.revision)


def _snapshot(hub: HubId, name: str, progress: bool) -> Path:
    from huggingface_hub import snapshot_download

    try:
        files = _listing(hub)
        patterns = None if files is None else [glob.escape(f) for f in needed_files(files)]
        with _progress_bars(progress):
            return Path(snapshot_download(hub.repo_id, revision=hub.revision, allow_patterns=patterns))
    except Exception as e:
        _raise_explained(e, hub, name)


def _listing(hub: HubId) -> list[str] | None:
    """The repository's file names: from the Hub, else (offline, unreachable) the cached listing;
    None when neither is known (snapshot_download then decides what the cache can give)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(hub.repo_id, revision=hub.revision)
        return [s.rfilename for s in info.siblings or []]
    except (RepositoryNotFoundError, RevisionNotFoundError):  # gated repositories included
        raise
    except Exception:  # offline or unreachable: snapshot_download falls back to the cache itself
        try:
            from huggingface_hub import get_cached_repo_tree
        except ImportError:  # huggingface_hub < 2: the cached snapshot is used as it is
            return None
        try:
            return [f.path for f in get_cached_repo_tree(hub.repo_id, revision=hub.revision)]
        except Exception:
            return None


def _raise_explained(e: Exception, hub: HubId, name: str, filename: str | None = None):
    """Raise a :class:`CheckpointError` that names ``name`` (as the user wrote it) and says what to
    do; other errors unchanged."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = constants.ENDPOINT
    if isinstance(e, GatedRepoError):
        msg = (f"{name}: {hub.repo_id} is a gated model on the Hub; accept its conditions on "
               f"{endpoint}/{hub.repo_id} and log in (`hf auth login`) or set HF_TOKEN to a token of that account")
    elif isinstance(e, RevisionNotFoundError):
        msg = f"{name}: the Hub ({endpoint}) has no revision {hub.revision!r} (branch, tag or commit) of {hub.repo_id}"
    elif isinstance(e, RepositoryNotFoundError):
        msg = (f"{name}: not found here, and the Hub ({endpoint}) has no model {hub.repo_id}; if it is "
               "private, log in (`hf auth login`) or set HF_TOKEN")
    elif isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
        if constants.HF_HUB_OFFLINE:
            msg = (f"{name}: not found here nor in {where}, and downloads are off (HF_HUB_OFFLINE=1); "
                   "download it once online or pass a local folder")
        else:
            msg = (f"{name}: not found here nor in {where}, and the Hub ({endpoint}) could not be reached; "
                   "check the connection (or HF_ENDPOINT for a mirror)")
    elif isinstance(e, EntryNotFoundError):
        msg = f"{name}: {hub} on the Hub ({endpoint}) has no file {filename!r}"
    elif isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "an error")
        msg = f"{name}: the Hub ({endpoint}) answered {status}: {str(e).splitlines()[0]}"
    else:
        raise e
    raise CheckpointError(msg) from e


@contextlib.contextmanager
def _progress_bars(show: bool):
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if show or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()
