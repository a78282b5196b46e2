"""Pictures of map vectors: ``draw_bev`` (BEV of GT and predictions), ``beside`` (with camera images),
``render_sample`` in ``viz.cli`` (what ``lisa map show`` writes)."""
