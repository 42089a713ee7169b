"""The MLLM's own vision encoder as a classifier (EMT compares the two).

* zero-shot: a CLIP model (the encoder folder shipped beside a model, e.g. ``tiny-llava/encoder``, or any CLIPModel
  folder given with ``--encoder``) scores images against class-name prompts; the classifier is built once from
  class names x templates, batched, as open_clip's ``build_zero_shot_classifier`` does.
* linear probe: logistic regression (scikit-learn) on the frozen vision-tower features of the train split, scored
  on the test split. Works for every supported family (models/families.py says where its features are read).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data import ImageDataset, Sample
from ..data.sampling import SamplingStrategy, select_split
from ..errors import BadSampleError, ModelLoadError
from ..models.features import vision_encoder_features
from ..models.loading import LoadedModel
from ..stats import wilson_interval

log = logging.getLogger(__name__)

# open_clip's short ensemble, plus the bare name; datasets may bring their own (``clip_templates`` in their YAML).
DEFAULT_TEMPLATES = ("a photo of a {}.", "an image of {}.", "a picture of the {}.", "{}")


@dataclass
class BaselineResult:
    kind: str  # "zero-shot" | "linear-probe"
    dataset: str
    n: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    n_train: int = 0
    encoder: str = ""
    # linear probe: test classes without a single training sample (the probe cannot predict them: class-disjoint
    # splits, or a train limit too small to reach every class)
    untrained_classes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_images(samples: Sequence[Sample], ds_name: str, skip_bad: bool) -> tuple[list, list[int]]:
    images, labels = [], []
    for s in samples:
        try:
            images.append(s.load_image(ds_name))
            labels.append(s.label)
        except BadSampleError:
            if not skip_bad:
                raise
    return images, labels


def find_encoder(lm: LoadedModel | None, explicit: str | None) -> str | None:
    """The CLIP folder for zero-shot: ``explicit``, else ``<model folder>/encoder`` when the model ships one."""
    if explicit:
        return explicit
    if lm is not None:
        cand = Path(lm.source) / "encoder"
        if (cand / "config.json").is_file():
            return str(cand)
    return None


class ZeroShotClassifier:
    """A CLIPModel folder as a zero-shot classifier."""

    def __init__(self, folder: str, device: str = "cpu"):
        # start-up time: transformers' model classes (about 2 s) load only when a CLIP folder is used
        from transformers import AutoProcessor, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(folder, use_safetensors=True).to(device).eval()
            self.processor = AutoProcessor.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{folder}: cannot load a CLIP model for zero-shot ({exc})") from exc
        self.folder = folder
        self.device = device

    @torch.inference_mode()
    def class_embeddings(self, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        texts = [t.format(c) for c in class_names for t in templates]
        tok = self.processor.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
        emb = self.model.get_text_features(**tok)
        emb = getattr(emb, "pooler_output", emb)
        emb = torch.nn.functional.normalize(emb, dim=-1).view(len(class_names), len(templates), -1).mean(1)
        return torch.nn.functional.normalize(emb, dim=-1)

    @torch.inference_mode()
    def image_embeddings(self, images: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch_size):
            pix = self.processor.image_processor(images[i : i + batch_size], return_tensors="pt")["pixel_values"]
            emb = self.model.get_image_features(pixel_values=pix.to(self.device))
            out.append(torch.nn.functional.normalize(getattr(emb, "pooler_output", emb), dim=-1))
        return torch.cat(out)

    def predict(self, images: Sequence[Any], class_names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        weights = self.class_embeddings(class_names, templates)
        return (self.image_embeddings(images) @ weights.T).argmax(-1).cpu().numpy()


def zero_shot_accuracy(encoder: str, ds: ImageDataset, split: str = "test", limit: int | None = None,
                       templates: Sequence[str] | None = None, skip_bad: bool = False,
                       sampling: SamplingStrategy = "stratified", seed: int = 0) -> BaselineResult:
    """On the samples the MLLM answers (the same ``limit``, ``sampling`` and ``seed``)."""
    samples, _ = select_split(ds, split, limit, strategy=sampling, seed=seed)
    images, labels = _load_images(samples, ds.name, skip_bad)
    clf = ZeroShotClassifier(encoder)
    tpl = templates or getattr(ds, "clip_templates", None) or DEFAULT_TEMPLATES
    pred = clf.predict(images, ds.class_names, tpl)
    hits = int((pred == np.array(labels)).sum())
    est = wilson_interval(hits, len(labels))
    return BaselineResult("zero-shot", ds.name, len(labels), est.value, est.low, est.high, encoder=encoder)


def vision_features(lm: LoadedModel, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
    """Frozen features of the MLLM's vision encoder as its projector reads them, mean over patches (LLaVA: the
    ``vision_feature_layer`` without CLS; Qwen2-VL: the merger's input; Idefics3/SmolVLM: the connector's input;
    InstructBLIP: the vision model's output)."""
    try:
        return vision_encoder_features(lm, images, batch_size).numpy()
    except LookupError as exc:
        raise ModelLoadError(f"{lm.source}: the linear probe reads the vision features at the module '{exc}' "
                             f"({lm.family}), which this model does not have") from exc


def linear_probe_accuracy(lm: LoadedModel, ds: ImageDataset, *, train_split: str = "train", split: str = "test",
                          train_limit: int | None = 2000, limit: int | None = None, seed: int = 0,
                          skip_bad: bool = False, sampling: SamplingStrategy = "stratified") -> BaselineResult:
    """Fit on ``train_limit`` samples of ``train_split``, score on the samples the MLLM answers (``limit`` of
    ``split``), both drawn as ``sampling`` says. Test classes with no training sample are named in a warning and
    in the result's ``untrained_classes``."""
    # start-up time: scikit-learn loads only for the linear probe, not for every evaluation that imports this module
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, _ = select_split(ds, train_split, train_limit or None, strategy=sampling, seed=seed)
    test, _ = select_split(ds, split, limit, strategy=sampling, seed=seed)
    x_tr_img, y_tr = _load_images(train, ds.name, skip_bad)
    x_te_img, y_te = _load_images(test, ds.name, skip_bad)
    untrained = untrained_classes(ds, y_tr, y_te)
    if untrained:
        log.warning("linear probe on %s: %d test class(es) have no sample among the %d '%s' samples it trains on, "
                    "so it can never predict them: %s (class-disjoint splits, or raise probe_train_limit)", ds.name,
                    len(untrained), len(y_tr), train_split, ", ".join(untrained))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(vision_features(lm, x_tr_img), y_tr)
    pred = clf.predict(vision_features(lm, x_te_img))
    hits = int((pred == np.array(y_te)).sum())
    est = wilson_interval(hits, len(y_te))
    return BaselineResult("linear-probe", ds.name, len(y_te), est.value, est.low, est.high, n_train=len(y_tr),
                          encoder=lm.source, untrained_classes=untrained)


def untrained_classes(ds: ImageDataset, train_labels: Sequence[int], test_labels: Sequence[int]) -> list[str]:
    """The names of the classes among ``test_labels`` that ``train_labels`` never holds, in class order."""
    missing = sorted(set(test_labels) - set(train_labels))
    return [ds.class_names[c] if 0 <= c < len(ds.class_names) else str(c) for c in missing]
