"""Pictures of map vectors: ``draw_bev`` (BEV of GT and predictions), ``beside`` (with the front camera),
``render_sample`` in ``viz.cli`` (what ``lisa map show`` writes)."""
