"""Vectorized HD-map detection on nuScenes: ground truth, evaluation, the map detector and its commands.

``spec`` holds the facts every part of this package shares (classes, range, point counts, the
normalisation and the permutation-equivalent point orders); everything else builds on it.

- ``nuscenes``: reading a nuScenes tree (13 tables, official splits or a split file, map expansion v1.3,
  poses) without the devkit.
- ``gt``: per-sample vector GT in the LiDAR frame (MapTR's protocol) and the GT cache a data loader
  reads (``read_cache``): camera paths, intrinsics, ``cam2lidar`` / ``lidar2img``, instances.
- ``evaluation``: Chamfer-distance AP (``evaluate(gts, predictions)``).
- ``synth``: a synthetic nuScenes tree (town map, drives, rendered camera images) for tests and the demo.
- ``viz``: BEV pictures of GT and predictions beside the front camera.
- ``cli``: the ``lisa map <verb>`` table (``synth``, ``gt-cache``, ``eval``, ``show``, ...).
"""
