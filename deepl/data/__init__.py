"""Datasets, input pipelines and augmentation.

  ds = get_dataset('mnist', manual_dir='../shared/data/mnist')
  it = train_iterator(ds.splits[ds.train_split], global_batch_size=128, seed=0)
  for batch in eval_batches(ds.splits[ds.eval_split], global_batch_size=512):
    ...

Text: tokenize first (see deepl.data.text and deepl.data.tokenizers):

  ds = get_dataset('glue/sst2', manual_dir='../shared/data/sst2')
  tok = tokenizers.build('word', ds.texts(ds.train_split))
  splits = text_splits(ds, tok, kind='classification', max_length=64)
  it = train_iterator(splits[ds.train_split], global_batch_size=32, seed=0)

Big splits stream from their files (`RecordSource`, `TokenWindows`) and
`workers=N` makes batches in N processes; see deepl.data.pipeline.
"""

from deepl.data.augment import augment_batch
from deepl.data.augment import random_crop_flip
from deepl.data.datasets import ArraySource
from deepl.data.datasets import Dataset
from deepl.data.datasets import get_dataset
from deepl.data.datasets import known_names
from deepl.data.images import HOST_AUGMENTATIONS
from deepl.data.images import ImagePreprocess
from deepl.data.pipeline import bucket_length
from deepl.data.pipeline import eval_batches
from deepl.data.pipeline import EvalBatches
from deepl.data.pipeline import train_iterator
from deepl.data.pipeline import WorkerBatches
from deepl.data.records import RecordSource
from deepl.data.text import ClassificationTextSource
from deepl.data.text import text_splits
from deepl.data.text import TextSplit
from deepl.data.text import WindowSource
from deepl.data.text_files import TextFiles
from deepl.data.text_files import TokenWindows

__all__ = [
    'ArraySource', 'ClassificationTextSource', 'Dataset', 'EvalBatches', 'HOST_AUGMENTATIONS',
    'ImagePreprocess', 'RecordSource', 'TextFiles', 'TextSplit', 'TokenWindows',
    'WindowSource', 'WorkerBatches', 'augment_batch', 'bucket_length', 'eval_batches',
    'get_dataset', 'known_names', 'random_crop_flip', 'text_splits', 'train_iterator',
]
