"""`deepl train`: train, evaluate and checkpoint an experiment (the loop is deepl/train.py).

  deepl train --config=experiments/mnist_cnn.py --workdir=runs/mnist [--config.optim.lr=0.05]

Rerunning the same command resumes from the workdir's newest checkpoint; a
config that changes the training from the run's is refused unless
--allow_config_change (deepl/workdir.py).
"""

from deepl import train


def run(config, workdir: str, flags) -> None:
  train.train_and_evaluate(config, workdir, allow_config_change=flags.allow_config_change)
