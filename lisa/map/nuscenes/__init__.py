"""Reading a nuScenes tree as users have it, with the devkit's semantics but no devkit dependency.

- :class:`~lisa.map.nuscenes.tables.NuScenesTree`: the 13 tables of ``DATAROOT/VERSION``, indexed and checked.
- :class:`~lisa.map.nuscenes.expansion.MapExpansion`: one location's map expansion (v1.3 or newer).
- :func:`~lisa.map.nuscenes.splits.split_scenes`: official scene lists (mini_train/mini_val, train/val) or a
  split file.
- :mod:`~lisa.map.nuscenes.poses`: quaternions, 4x4 transforms and yaw.

The devkit itself pins ``numpy<2``, which this project's stack does not fit, hence this small reader.
"""
