"""Datasets: the sample model, on-disk formats, the embedded sets, prompts."""

from .registry import DATASETS, FORMATS, load_dataset, parse_dataset_ref
from .types import ImageDataset, Sample, load_image

__all__ = ["DATASETS", "FORMATS", "ImageDataset", "Sample", "load_dataset", "load_image", "parse_dataset_ref"]
