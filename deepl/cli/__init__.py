"""The `deepl` command line: main.py parses the flags and dispatches to one
file per command (train.py, evaluate.py, sample.py, predict.py)."""
