"""Hub ids for model arguments, against a stand-in of the Hub's file API on loopback.

huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_TOKEN and HF_HUB_OFFLINE when it is imported, so
every case that depends on them runs in a fresh process with its own environment.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.hub import FakeHub, repo_from_folder
from lisa.checkpoint.errors import CheckpointError
from lisa.checkpoint.hub import HubId, needed_files, parse_hub_id, resolve_file, resolve_model

ROOT = Path(__file__).resolve().parents[1]
LISA_ID, CLIP_ID, GATED_ID = "someone/tiny-lisa", "someone/tiny-clip", "someone/gated-clip"
TOKEN = "hf_test_token"
RESOLVE = """
import json, sys
from lisa.checkpoint.hub import resolve_model
out = {}
for ref in sys.argv[1:]:
    try:
        path = resolve_model(ref, progress=False)
        out[ref] = {"path": str(path), "files": sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                                                      if p.is_file())}
    except Exception as e:
        out[ref] = {"error": type(e).__name__ + ": " + str(e)}
print(json.dumps(out))
"""


def _env(hub_url, home, offline=False, token=None):
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1" if offline else "0", TRANSFORMERS_OFFLINE="0",
               PYTHONPATH=str(ROOT), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_TOKEN", None)
    if hub_url:
        env["HF_ENDPOINT"] = hub_url
    if token:
        env["HF_TOKEN"] = token
    return env


def _resolve(env, *refs) -> dict:
    r = subprocess.run([sys.executable, "-c", RESOLVE, *refs], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def published(tiny_ckpt, tmp_path_factory):
    """The tiny LISA checkpoint as two Hub repositories, as released LISA models are: the LISA
    folder names its CLIP tower by Hub id; both carry files a checkpoint does not need."""
    root = tmp_path_factory.mktemp("published")
    lisa, clip = root / "lisa", root / "clip"
    shutil.copytree(tiny_ckpt, lisa)
    shutil.move(lisa / "vision_tower", clip)
    cfg = json.loads((lisa / "config.json").read_text())
    cfg["mm_vision_tower"] = cfg["vision_tower"] = CLIP_ID
    (lisa / "config.json").write_text(json.dumps(cfg))
    lisa_repo = repo_from_folder(lisa)
    lisa_repo.files.update({"tf_model.h5": b"not needed", "training_args.bin": b"not needed",
                            "README.md": b"# tiny"})
    clip_repo = repo_from_folder(clip, revisions={"main": "a" * 40, "v1": "a" * 40})
    # the same weights in a second format must not be fetched (and would not load)
    clip_repo.files.update({"pytorch_model.bin": b"a duplicate format", "flax_model.msgpack": b"x"})
    gated = repo_from_folder(clip, gated_token=TOKEN)
    needed = {LISA_ID: sorted(p.relative_to(lisa).as_posix() for p in lisa.rglob("*") if p.is_file()),
              CLIP_ID: sorted(p.relative_to(clip).as_posix() for p in clip.rglob("*") if p.is_file())}
    return {LISA_ID: lisa_repo, CLIP_ID: clip_repo, GATED_ID: gated}, needed


def test_parse_hub_id():
    assert parse_hub_id("xinlai/LISA-7B-v1") == HubId("xinlai/LISA-7B-v1")
    assert parse_hub_id("openai/clip-vit-large-patch14-336@main") == HubId("openai/clip-vit-large-patch14-336", "main")
    assert parse_hub_id("owner/name@refs/pr/1") == HubId("owner/name", "refs/pr/1")
    for not_an_id in ("ckpt", "/abs/path", "./rel/path", "a/b/c", "owner/na..me", "owner/", "~/x", "C:\\x\\y"):
        assert parse_hub_id(not_an_id) is None, not_an_id


def test_needed_files_pick_one_format_and_what_a_checkpoint_uses():
    files = ["config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json",
             "special_tokens_map.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "model.safetensors.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
             "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack", "training_args.bin",
             "README.md", ".gitattributes", "original/consolidated.00.pth", "vision_tower/config.json",
             "vision_tower/pytorch_model.bin", "examples/shape_0.png", "merges.txt"]
    assert needed_files(files) == sorted([
        "config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json",
        "special_tokens_map.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "vision_tower/config.json", "vision_tower/pytorch_model.bin",
        "examples/shape_0.png", "merges.txt"])
    # a released LISA folder: .bin shards only
    assert needed_files(["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
                         "pytorch_model.bin.index.json", "tokenizer.model"]) == [
        "config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json", "tokenizer.model"]


def test_a_local_folder_or_file_wins_over_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    (tmp_path / "owner" / "sam.pth").write_bytes(b"x")
    assert resolve_model("owner/name") == Path("owner/name")  # relative, no network involved
    assert resolve_file("owner/sam.pth") == Path("owner/sam.pth")
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        resolve_model(tmp_path / "missing" / "folder")
    with pytest.raises(CheckpointError, match="two revisions"):
        resolve_model("owner/other@v1", revision="v2")


@pytest.mark.slow
def test_chat_with_a_hub_id_downloads_once_then_uses_the_cache(published, tiny_ckpt, tmp_path):
    """A real download, load and answer through `lisa chat --version owner/name`; the second run finds
    everything in the cache with the server gone, as does offline mode; nothing unneeded is fetched."""
    from lisa.inference.pipeline import LisaPipeline

    repos, needed = published
    img = tmp_path / "img.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(img)
    chat = [sys.executable, "-m", "lisa", "chat", "--version", LISA_ID, "--image", str(img), "--prompt",
            "Segment the box.", "--max_new_tokens", "5", "--json", "--device", "cpu", "--precision", "fp32",
            "--vis_save_path", str(tmp_path / "vis")]
    expected = LisaPipeline.from_pretrained(tiny_ckpt, device="cpu", precision="fp32", max_new_tokens=5,
                                            progress=False)(np.asarray(Image.open(img)), "Segment the box.")
    home = tmp_path / "hf_home"
    with FakeHub(repos) as hub:
        env = _env(hub.url, home)
        r = subprocess.run(chat, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1])["text"] == expected.text
        assert "Fetching" in r.stderr  # huggingface_hub's progress bar
        got = sorted(hub.downloaded)
    assert got == sorted([f"{LISA_ID}/{f}" for f in needed[LISA_ID]] + [f"{CLIP_ID}/{f}" for f in needed[CLIP_ID]])
    # the server is gone: the cached snapshot answers the same
    r = subprocess.run(chat, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["text"] == expected.text
    # offline mode: the cached model resolves, an uncached one is a clear error
    out = _resolve(_env(None, home, offline=True), LISA_ID, CLIP_ID, "someone/never-fetched")
    assert sorted(out[LISA_ID]["files"]) == needed[LISA_ID] and sorted(out[CLIP_ID]["files"]) == needed[CLIP_ID]
    err = out["someone/never-fetched"]["error"]
    assert err.startswith("CheckpointError: someone/never-fetched:") and "HF_HUB_OFFLINE=1" in err


def test_hub_errors_name_the_id_and_the_token_opens_a_gated_repo(published, tmp_path):
    repos, needed = published
    with FakeHub(repos) as hub:
        out = _resolve(_env(hub.url, tmp_path / "a"), "someone/missing", f"{CLIP_ID}@nope", GATED_ID,
                       f"{CLIP_ID}@v1")
        assert sorted(hub.downloaded) == [f"{CLIP_ID}/{f}" for f in needed[CLIP_ID]]  # only for @v1
        with_token = _resolve(_env(hub.url, tmp_path / "b", token=TOKEN), GATED_ID)
    missing = out["someone/missing"]["error"]
    assert missing.startswith("CheckpointError: someone/missing:") and "has no model someone/missing" in missing
    assert "no revision 'nope'" in out[f"{CLIP_ID}@nope"]["error"] and CLIP_ID in out[f"{CLIP_ID}@nope"]["error"]
    gated = out[GATED_ID]["error"]
    assert gated.startswith(f"CheckpointError: {GATED_ID}:") and "gated" in gated and "HF_TOKEN" in gated
    assert out[f"{CLIP_ID}@v1"]["files"] == needed[CLIP_ID]
    assert with_token[GATED_ID]["files"] == needed[CLIP_ID]  # HF_TOKEN is sent by huggingface_hub itself


def test_unreachable_hub_without_cache_is_a_clear_error(tmp_path):
    with FakeHub({}) as hub:
        url = hub.url  # a port nothing listens on once the server is stopped
    out = _resolve(_env(url, tmp_path / "home"), "someone/tiny-lisa")
    err = out["someone/tiny-lisa"]["error"]
    assert err.startswith("CheckpointError: someone/tiny-lisa:") and "could not be reached" in err and url in err


def test_a_missing_hub_file_names_the_file(published, tmp_path):
    repos, _ = published
    code = ("import sys\nfrom lisa.checkpoint.hub import resolve_file\n"
            "try:\n    print(resolve_file(sys.argv[1], progress=False))\nexcept Exception as e:\n    print('ERR', e)")
    with FakeHub(repos) as hub:
        env = _env(hub.url, tmp_path / "home")
        ok = subprocess.run([sys.executable, "-c", code, f"{CLIP_ID}/config.json"], env=env, capture_output=True,
                            text=True, timeout=120)
        bad = subprocess.run([sys.executable, "-c", code, f"{CLIP_ID}@v1/sam_vit_h.pth"], env=env,
                             capture_output=True, text=True, timeout=120)
    path = Path(ok.stdout.strip().splitlines()[-1])
    assert path.name == "config.json"
    assert json.loads(path.read_text()) == json.loads(repos[CLIP_ID].files["config.json"])
    assert "ERR" in bad.stdout and "has no file 'sam_vit_h.pth'" in bad.stdout
