"""`lisa eval` and `lisa train --eval_only` on model folders and training checkpoints."""

import json
import shutil

import pytest

from helpers.train import data_tree, reference_run


@pytest.fixture(scope="module")
def ref(tmp_path_factory, tiny_ckpt):
    return reference_run(tmp_path_factory, tiny_ckpt)


def _common(data, logs, exp):
    return ["--dataset_dir", str(data), "--val_dataset", "ReasonSeg|val", "--log_base_dir", str(logs),
            "--exp_name", exp, "--precision", "fp32", "--workers", "0"]


def test_eval_of_a_model_folder_writes_a_table_and_metrics(tmp_path_factory, tiny_ckpt, tmp_path, capsys):
    from lisa.evaluation.cli import main

    data = data_tree(tmp_path_factory)
    assert main(["--version", str(tiny_ckpt), *_common(data, tmp_path, "plain"), "--save_masks",
                 str(tmp_path / "masks")]) == 0
    out = capsys.readouterr().out
    assert "gIoU" in out and "ReasonSeg|val" in out
    m = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert m["protocol"] == "teacher" and [s["index"] for s in m["samples"]] == [0, 1]
    assert all(len(s["iou"]) == 1 for s in m["samples"])
    assert len(list((tmp_path / "masks").glob("*_mask_0.jpg"))) == 2


def test_eval_only_and_eval_resume_evaluate_the_training_checkpoint(ref, tmp_path_factory, tmp_path):
    from lisa.evaluation.cli import main as eval_main
    from lisa.train.cli import main as train_main

    data = data_tree(tmp_path_factory)
    shutil.copytree(ref["run_dir"], tmp_path / "ref")
    (tmp_path / "ref" / "metrics.json").unlink()
    # as the original: --eval_only with auto_resume evaluates runs/<exp>/ckpt_model
    assert train_main(["--version", ref["args"]["version"], *_common(data, tmp_path, "ref"), "--eval_only"]) == 0
    via_train = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert eval_main(["--resume", str(tmp_path / "ref"), *_common(data, tmp_path, "again")]) == 0
    via_eval = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert via_eval["samples"] == via_train["samples"]
    # the merged checkpoint scores like the LoRA model validated at the end of training
    during = json.loads((ref["run_dir"] / "metrics.json").read_text())
    assert via_eval["giou"] == pytest.approx(during["giou"], abs=5e-3)
    assert via_eval["ciou"] == pytest.approx(during["ciou"], abs=5e-3)


def test_eval_errors_are_reported(tmp_path_factory, tmp_path, capsys):
    from lisa.evaluation.cli import main

    data = data_tree(tmp_path_factory)
    assert main(["--version", str(tmp_path / "missing"), *_common(data, tmp_path, "x")]) == 2
    assert "missing" in capsys.readouterr().err
