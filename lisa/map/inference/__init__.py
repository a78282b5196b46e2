"""Map detector inference: predictions, MapTR results JSON, Chamfer AP of a checkpoint."""
