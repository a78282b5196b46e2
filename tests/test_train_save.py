"""Training checkpoints under failure: a full disk during a save, the order of syncs, markers and
deletions, and a resume that does not log its steps twice. A stand-in engine writes the files, so no
DeepSpeed run is needed (test_train_run.py resumes a real one)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from lisa.checkpoint import run_folder
from lisa.train import resume


class Engine:
    """Writes what DeepSpeed's save_checkpoint would (a model file per tag); can fail half-way."""

    def __init__(self, fail: BaseException | None = None):
        self.fail = fail

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 4096)
        if self.fail is not None:
            raise self.fail


def _save(ckpt, step, engine=None):
    return resume.save(engine or Engine(), ckpt, step, {"global_step": step})


@pytest.mark.parametrize("error, free", [
    (OSError(errno.ENOSPC, "No space left on device"), 10 * 2**30),
    (RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/3: "
                  "file write failed"), 3 * 2**20),  # torch.save's words for it; the free space tells
])
def test_a_full_disk_during_a_save_says_so_and_keeps_the_previous_checkpoint(error, free, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt_model"
    assert _save(ckpt, 2) == "global_step2"
    monkeypatch.setattr(resume.shutil, "disk_usage", lambda path: SimpleNamespace(free=free, total=2**40, used=0))
    with pytest.raises(resume.CheckpointSaveError) as err:
        _save(ckpt, 4, Engine(fail=error))
    message = str(err.value)
    assert "the disk is full" in message and f"{free / 2**20:.0f} MiB free" in message
    assert "global_step4" in message and "global_step2 is intact" in message and "--auto_resume" in message
    assert not (ckpt / "global_step4").exists()  # the half-written tag is gone, its space given back
    assert run_folder.locate(ckpt) == (ckpt, "global_step2")
    assert (ckpt / "latest").read_text() == "global_step2"


def test_other_save_failures_are_named_without_blaming_the_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(resume.shutil, "disk_usage", lambda path: SimpleNamespace(free=2**40, total=2**41, used=0))
    with pytest.raises(resume.CheckpointSaveError) as err:
        _save(tmp_path / "ckpt_model", 1, Engine(fail=PermissionError(13, "Permission denied")))
    assert "disk is full" not in str(err.value) and "Permission denied" in str(err.value)
    assert "no earlier checkpoint" in str(err.value)


def test_the_command_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    """``lisa train`` prints the explanation, not a traceback from the rank that failed."""
    from lisa.train import cli, session
    from lisa.train.loop import Trainer

    run_dir = tmp_path / "run"
    trainer = Trainer(Engine(fail=OSError(errno.ENOSPC, "No space left on device")), SimpleNamespace(), run_dir,
                      None, None, None, {"global_step": 7})
    monkeypatch.setattr(session, "run", lambda args: trainer.save())
    assert cli.main(["--version", "x", "--dataset_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lisa train: cannot save") and "the disk is full" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_files_are_synced_before_complete_and_complete_goes_before_the_files(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt_model"
    _save(ckpt, 1)
    events = []
    real_fsync, real_rmtree, real_write = os.fsync, resume.shutil.rmtree, resume.atomic_write

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rmtree(path, *args, **kwargs):
        events.append(("rmtree", str(path), (Path(path) / run_folder.COMPLETE).exists()))
        return real_rmtree(path, *args, **kwargs)

    def atomic_write(path, text):
        events.append(("mark", str(path)))
        return real_write(path, text)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(resume.shutil, "rmtree", rmtree)
    monkeypatch.setattr(resume, "atomic_write", atomic_write)
    _save(ckpt, 2)
    new = str(ckpt / "global_step2")
    written = {f"{new}/mp_rank_00_model_states.pt", f"{new}/rng_state_rank0.pt"}  # by the engine and the RNG save
    synced = [i for i, e in enumerate(events) if e[0] == "fsync" and e[1] in written]
    marked = events.index(("mark", str(ckpt / "global_step2" / run_folder.COMPLETE)))
    assert {events[i][1] for i in synced} == written
    assert max(synced) < marked  # every file on disk before the marker says the tag is complete
    pruned = [e for e in events if e[0] == "rmtree"]
    assert pruned == [("rmtree", str(ckpt / "global_step1"), False)]  # unmarked before its files went
    assert [t for _, t in run_folder.complete_tags(ckpt)] == ["global_step2"]


def test_a_resume_drops_the_logged_steps_it_runs_again(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    assert run_folder.drop_steps_after(log, 3) == 3  # steps 4, 5 and the line the kill cut short
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    assert run_folder.drop_steps_after(log, 3) == 0 and run_folder.drop_steps_after(tmp_path / "none.jsonl", 1) == 0
