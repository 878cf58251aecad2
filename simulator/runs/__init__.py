"""The runs layer: the run driver, run directories, checkpoints, the memory check, sweeps and their backends."""
