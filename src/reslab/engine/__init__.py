"""What a model runs on and how it is measured, below both training and evaluation: device,
threads and precision (device.py), batched inference (infer.py), classification metrics
(metrics.py) and machine classes (machine.py). A sibling of runs/: neither imports the other."""
