"""Inference: generation (decoding.py) and a trained run's pieces (trained_run.py).

Nothing here imports the trainer (deepl/train.py): `deepl evaluate`, `sample`
and `predict` read a run without building an optimizer or a train loop.
"""
