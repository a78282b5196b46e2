"""The demo's extra training sets (RefCOCO-format and Mapillary-format shapes) are read by the real
loaders, and what those loaders return matches the drawn shapes."""

import json

import numpy as np
from PIL import Image

from lisa.data.refer_seg import ReferSegDataset
from lisa.data.sem_seg import SemSegDataset
from lisa.demo.pretrain import log_area_map, read_instances
from lisa.demo.refer_shapes import REFER_STREAM, write_refer_shapes
from lisa.demo.semantic_shapes import INSTANCE_BASE, SEMANTIC_STREAM, write_semantic_shapes
from lisa.demo.shapes import SHAPES, generate_image


def test_semantic_shapes_label_every_shape_by_its_kind(tmp_path):
    summary = write_semantic_shapes(tmp_path, 4, seed=3, progress=False)
    assert summary["classes"] == list(SHAPES)
    config = json.loads((tmp_path / "mapillary" / "config_v2.0.json").read_text())
    assert [x["readable"] for x in config["labels"]] == ["Circle", "Square", "Triangle", "Unlabeled"]
    for i in range(4):
        label_png = Image.open(tmp_path / f"mapillary/training/v2.0/labels/shapes_{i:06d}.png")
        assert label_png.mode == "P"
        label = np.array(label_png)
        _, shapes = generate_image(np.random.default_rng([3, SEMANTIC_STREAM, i]))
        want = np.full(label.shape, 3)
        for s in shapes:
            want[s.mask(*label.shape)] = SHAPES.index(s.shape)
        np.testing.assert_array_equal(label, want)
        # Mapillary's instance encoding: label * 256 + instance number, one number per shape
        instances = np.asarray(Image.open(tmp_path / f"mapillary/training/v2.0/instances/shapes_{i:06d}.png"))
        np.testing.assert_array_equal(instances.astype(np.int64) // INSTANCE_BASE, want)
        for number, s in enumerate(shapes, start=1):
            assert (instances % INSTANCE_BASE == number).sum() == s.area
        # the pretraining's area target: log(shape area / image area) on each shape's pixels
        area = log_area_map(read_instances(tmp_path / f"mapillary/training/v2.0/labels/shapes_{i:06d}.png"),
                            np.where(want == 3, 255, want))
        for s in shapes:
            np.testing.assert_allclose(area[s.mask(*label.shape)], np.log(s.area / label.size), rtol=1e-5)
        assert (area[want == 3] == 0).all()

    ds = SemSegDataset(str(tmp_path), "mapillary", samples_per_epoch=8, num_classes_per_sample=3,
                       clip_size=56, sam_size=128)
    sample = ds[0]
    i = int(sample["image_path"].rsplit("_", 1)[1][:-4])
    _, shapes = generate_image(np.random.default_rng([3, SEMANTIC_STREAM, i]))
    assert sample["sampled_classes"] and set(sample["sampled_classes"]) <= {s.shape for s in shapes}
    for name, mask, question in zip(sample["sampled_classes"], sample["masks"], sample["questions"]):
        assert name in question
        assert int(np.asarray(mask).sum()) == sum(s.area for s in shapes if s.shape == name)


def test_smaller_rewrite_drops_the_extra_files(tmp_path):
    write_semantic_shapes(tmp_path, 5, seed=0, progress=False)
    write_semantic_shapes(tmp_path, 2, seed=0, progress=False)
    assert len(list((tmp_path / "mapillary/training/images").glob("*.jpg"))) == 2
    assert len(list((tmp_path / "mapillary/training/v2.0/labels").glob("*.png"))) == 2
    assert len(list((tmp_path / "mapillary/training/v2.0/instances").glob("*.png"))) == 2


def test_refer_shapes_masks_are_the_drawn_shapes(tmp_path):
    counts = write_refer_shapes(tmp_path, 3, seed=5, progress=False)
    assert counts["images"] == 3 and counts["refs"] >= 3
    ds = ReferSegDataset(str(tmp_path), "refcoco", samples_per_epoch=4, num_classes_per_sample=8,
                         clip_size=56, sam_size=128)
    sample = ds[0]
    assert sample["masks"].shape[0] == len(sample["questions"]) >= 1
    i = int(sample["image_path"].rsplit("_", 1)[1][:-4]) - 1
    _, shapes = generate_image(np.random.default_rng([5, REFER_STREAM, i]))
    areas = sorted(s.area for s in shapes)
    for mask in sample["masks"]:
        assert int(np.asarray(mask).sum()) in areas
