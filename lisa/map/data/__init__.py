"""Map detector data: samples, batches, and the nuScenes data set over part 1's GT cache."""
