"""Vectorized HD-map detection on nuScenes: ground truth, evaluation, the map detector and its commands.

``spec`` holds the facts every part of this package shares (classes, range, point counts, the
normalisation and the permutation-equivalent point orders); everything else builds on it.
"""
