"""The run layer, below both training and evaluation: the run/sweep/comparison/study directory
contract (rundir.py), run claims, checkpoints and the environment a run is recorded in."""
