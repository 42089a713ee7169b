"""Loaders for the dataset formats users already have on disk, used as ``load_dataset("<format>:<path>")``; one
module per format, each registering itself in :data:`unforget.data.registry.FORMATS` with
:func:`~unforget.data.formats._common.register_format`. FORMATS imports every module of this folder on its first
lookup, so a new format is one new file here.

Formats: ``mnist-idx`` (MNIST / Fashion-MNIST IDX files), ``cifar10`` and ``cifar100`` (the official python
pickle folders, read through a restricted unpickler: ``safe_pickle``), ``imagefolder`` (ImageNet / miniImageNet class
folders), ``jsonl`` and ``csv`` (rows of image path, question, answer or label) and ``hf`` (a ``datasets`` dataset
saved with ``save_to_disk``, a folder of parquet files, or an image folder read with the ``imagefolder`` builder).
Multiple choice (task ``multiple_choice``, sample parts in :mod:`unforget.data.choices`): ``scienceqa`` (ScienceQA's
problems.json / pid_splits.json), ``mmbench-tsv`` (VLMEvalKit's TSV) and ``mc-jsonl`` (question, options, answer).

Loaders are strict: a missing file, a malformed header / line / column or a label outside the class list raises
a :class:`DataError` (or :class:`BadSampleError`) naming the file and line or index. Image files are opened
lazily (``Sample.image`` is a path, bytes or an array view), so a corrupt image surfaces as a
``BadSampleError`` from ``Sample.load_image`` when it is used; skipping such samples is the evaluator's job.
"""
