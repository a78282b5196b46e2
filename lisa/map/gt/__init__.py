"""Map ground truth: per-sample vectors (MapTR's protocol), the GT cache, MapTR's GT JSON.

Public API (what training, prediction and evaluation use):

- ``read_cache(path) -> GTCache``: ``cache.samples`` is a list of :class:`SampleGT` (``cache.by_token``
  maps sample tokens to them). Each holds ``token``, ``scene``, ``location``, ``timestamp``,
  ``lidar_path``, ``lidar2ego``, ``ego2global`` (``lidar2global``), ``cameras`` (six :class:`CameraInfo`
  in ``CAMERAS`` order: ``path`` relative to the dataroot, ``width``, ``height``, ``intrinsic [3,3]``,
  ``cam2lidar [4,4]``, ``lidar2img [4,4]``) and the instances as arrays: ``labels [M]``,
  ``points [M,20,2]`` (metres, LiDAR frame, clamped to the range), ``closed [M]``, ``lengths [M]``,
  ``bboxes [M,4]``, ``raw`` (list of ``[N,2]``). ``sample.instances`` gives :class:`MapInstance` objects
  whose ``orders()`` are the permutation-equivalent point orders for matching.
- ``build_gt(GTBuildOptions) -> list[SampleGT]``, ``write_cache``, ``write_maptr_json``.
- ``sample_gt(frame, dataroot)`` / ``extract_vectors(geometry, lidar2global)`` for one sample.
"""

from lisa.map.gt.build import GTBuildOptions, build_gt, load_geometry, sample_gt
from lisa.map.gt.cache import GTCache, maptr_gt_json, read_cache, write_cache, write_maptr_json
from lisa.map.gt.geometry import MapGeometry, extract_vectors
from lisa.map.gt.sample import CAMERAS, CameraInfo, MapInstance, SampleFrame, SampleGT

__all__ = ["CAMERAS", "CameraInfo", "GTBuildOptions", "GTCache", "MapGeometry", "MapInstance", "SampleFrame",
           "SampleGT", "build_gt", "extract_vectors", "load_geometry", "maptr_gt_json", "read_cache",
           "sample_gt", "write_cache", "write_maptr_json"]
