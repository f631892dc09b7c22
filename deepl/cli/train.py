"""`deepl train`: train, evaluate and checkpoint an experiment (the loop is deepl/train.py).

  deepl train --config=experiments/mnist_cnn.py --workdir=runs/mnist [--config.optim.lr=0.05]

Rerunning the same command resumes from the workdir's newest checkpoint.
"""

from deepl import train


def run(config, workdir: str, flags) -> None:
  del flags  # the config holds everything training reads
  train.train_and_evaluate(config, workdir)
