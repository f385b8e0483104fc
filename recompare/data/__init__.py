"""The data layer: the dataset object, loaders, synthetic data and splits.

Everything the ``recompare data`` commands do is a function here::

    from recompare.data import planted, mirror, prepare, split
    ds = split(prepare("ml-100k/"), "both", seed=0)
    ds.save("ml100k")
"""
from .dataset import Dataset, IdMap, Split, from_interactions
from .loaders import detect_format, prepare, read_log, read_movielens
from .splits import split
from .synth import mirror, planted
from .validation import validation_split

__all__ = [
           "Dataset",
           "IdMap",
           "Split",
           "detect_format",
           "from_interactions",
           "mirror",
           "planted",
           "prepare",
           "read_log",
           "read_movielens",
           "split",
           "validation_split",
]
