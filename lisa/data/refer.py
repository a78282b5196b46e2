"""Index of a REFER-format dataset (refclef, refcoco, refcoco+, refcocog) and of gRefCOCO.

Layout under the refer root (``<dataset_dir>/refer_seg``)::

    <ds>/refs(<splitBy>).p   (or the converted refs(<splitBy>).json)   <ds>/instances.json
    grefcoco/grefs(<splitBy>).json (or .p)                              grefcoco/instances.json
    images/saiapr_tc-12/<file_name>             (refclef)
    images/mscoco/images/train2014/<file_name>  (all others)

Everything is indexed by id with dicts (the original filters lists inside loops, O(n*m)).
gRefCOCO refs may name several annotations (``ann_id`` a list) or none (``-1``: no target); here
every ref carries ``ann_ids`` as a list, empty for "no target".
"""

from __future__ import annotations

import os
from collections import defaultdict

from .files import load_json_or_fail
from .problems import DataError
from .safe_pickle import load_refs_file

REFER_DATASETS = ("refclef", "refcoco", "refcoco+", "refcocog", "grefcoco")


def default_split_by(dataset: str) -> str:
    return "umd" if dataset == "refcocog" else "unc"


def image_dir(refer_root: str, dataset: str) -> str:
    if dataset == "refclef":
        return os.path.join(refer_root, "images", "saiapr_tc-12")
    return os.path.join(refer_root, "images", "mscoco", "images", "train2014")


def refs_path(refer_root: str, dataset: str, split_by: str) -> str:
    """The pickle path (the JSON next to it is preferred when present)."""
    if dataset == "grefcoco":
        base = os.path.join(refer_root, dataset, f"grefs({split_by})")
        return base + ".p" if os.path.exists(base + ".p") else base + ".json"
    return os.path.join(refer_root, dataset, f"refs({split_by}).p")


def _split_matches(ref_split: str, wanted: str) -> bool:
    if wanted in ("testA", "testB", "testC"):
        return wanted[-1] in ref_split
    if wanted == "test":
        return "test" in ref_split
    return ref_split == wanted


class ReferIndex:
    """refs / annotations / images of one REFER dataset, looked up by id."""

    def __init__(self, refer_root: str, dataset: str, split_by: str | None = None):
        if dataset not in REFER_DATASETS:
            raise DataError(f"unknown referring dataset {dataset!r}; expected one of {REFER_DATASETS}")
        self.root = refer_root
        self.dataset = dataset
        self.split_by = split_by or default_split_by(dataset)
        self.folder = os.path.join(refer_root, dataset)
        if not os.path.isdir(self.folder):
            raise DataError(f"{dataset}: expected the folder {self.folder}, which does not exist")
        self.refs_file = refs_path(refer_root, dataset, self.split_by)
        self.instances_file = os.path.join(self.folder, "instances.json")
        self.image_dir = image_dir(refer_root, dataset)

        if self.refs_file.endswith(".json") and dataset == "grefcoco":
            refs = load_json_or_fail(self.refs_file, dataset)
        else:
            refs = load_refs_file(self.refs_file)
        instances = load_json_or_fail(self.instances_file, dataset)
        if not isinstance(refs, list) or not isinstance(instances, dict):
            raise DataError(f"{self.refs_file} / {self.instances_file}: expected a list of refs and "
                            "a COCO-style dict")
        try:
            self.images = {img["id"]: img for img in instances["images"]}
            self.anns = {ann["id"]: ann for ann in instances["annotations"]}
            self.cats = {c["id"]: c["name"] for c in instances.get("categories", [])}
        except (KeyError, TypeError) as e:
            raise DataError(f"{self.instances_file}: malformed COCO instances (missing {e})") from None
        self.refs: dict = {}
        self.bad_refs: list[str] = []  # refs that are not dicts with the fields we need
        self.image_refs: dict = defaultdict(list)
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict) or not {"image_id", "sentences", "split"} <= set(ref):
                self.bad_refs.append(f"ref #{i}")
                continue
            ref_id = ref.get("ref_id", i)
            ref = dict(ref, ann_ids=self._ann_ids(ref))
            self.refs[ref_id] = ref
            self.image_refs[ref["image_id"]].append(ref_id)

    @staticmethod
    def _ann_ids(ref: dict) -> list:
        ann = ref.get("ann_id", -1)
        ids = ann if isinstance(ann, list) else [ann]
        return [a for a in ids if a != -1]

    def ref_ids(self, split: str | None = None) -> list:
        if split is None:
            return list(self.refs)
        return [rid for rid, ref in self.refs.items() if _split_matches(str(ref["split"]), split)]

    def image_path(self, image_id) -> str:
        return os.path.join(self.image_dir, self.images[image_id]["file_name"])

    def sentences(self, ref: dict) -> list[str]:
        """The ``sent`` field (lower-cased, tokenized text) of every sentence of a ref."""
        out = []
        sentences = ref.get("sentences")
        for s in sentences if isinstance(sentences, list) else []:
            text = s.get("sent") if isinstance(s, dict) else None
            if isinstance(text, str) and text.strip():
                out.append(text.strip().lower())
        return out

    def split_images(self, split: str) -> dict:
        """image_id -> [(sentence, ann_ids, ref_id), ...] for the refs of ``split``."""
        out: dict = defaultdict(list)
        for rid in self.ref_ids(split):
            ref = self.refs[rid]
            for sent in self.sentences(ref):
                out[ref["image_id"]].append((sent, ref["ann_ids"], rid))
        return dict(out)
