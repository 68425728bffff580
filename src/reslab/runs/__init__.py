"""The run layer, below both training and evaluation: the run/sweep/comparison directory
contract, checkpoints, inference and metrics, and the environment a run is recorded in."""
