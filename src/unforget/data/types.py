"""The data model every loader produces and every evaluator / trainer consumes."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union

import numpy as np
from PIL import Image

from ..errors import BadSampleError, DataError

ImageLike = Union[Image.Image, np.ndarray, str, Path, bytes]
Task = Literal["classification", "vqa", "caption", "text", "multiple_choice"]
CHOICE_MATCHERS = ("vlmevalkit", "strict")
"""How a multiple-choice answer is read as an option letter (:mod:`unforget.evaluation.choices`)."""

# Decompression-bomb guard: refuse images above this many pixels (Pillow warns at 89M, errors at 179M).
MAX_IMAGE_PIXELS = 64_000_000


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (palette, alpha, CMYK, 16-bit grey, float) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: ImageLike, *, what: str) -> Image.Image:
    """Open ``source`` as an RGB image; ``what`` names the sample in the error message."""
    try:
        if isinstance(source, Image.Image):
            img = source
        elif isinstance(source, np.ndarray):
            arr = source
            if arr.dtype != np.uint8:
                arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr)
        elif isinstance(source, (bytes, bytearray)):
            img = _open_checked(io.BytesIO(source), what)
        elif isinstance(source, (str, Path)):
            path = Path(source)
            if not path.exists():
                raise BadSampleError(f"{what}: image file {path} does not exist", path=str(path))
            if path.stat().st_size == 0:
                raise BadSampleError(f"{what}: image file {path} is empty (0 bytes)", path=str(path))
            with open(path, "rb") as fh:
                img = _open_checked(io.BytesIO(fh.read()), what)
        else:
            raise BadSampleError(f"{what}: cannot read an image from {type(source).__name__}")
        return to_rgb(img)
    except BadSampleError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        where = f" ({source})" if isinstance(source, (str, Path)) else ""
        raise BadSampleError(
            f"{what}{where}: unreadable image: {exc}. Fix or remove the file, or pass --skip-bad to skip it.",
            path=str(source) if isinstance(source, (str, Path)) else None,
        ) from exc


def _open_checked(fh: io.BytesIO, what: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fh)
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise BadSampleError(
                    f"{what}: image of {w}x{h} pixels exceeds the {MAX_IMAGE_PIXELS:,}-pixel limit "
                    "(decompression-bomb guard); resize it first"
                )
            img.load()  # force decoding now so truncation is caught here, not later
        except Image.DecompressionBombWarning as exc:
            raise BadSampleError(f"{what}: image too large ({exc}); resize it first") from exc
    return img


@dataclass(frozen=True)
class Sample:
    """One example. Classification: ``label`` (class index). VQA: ``question`` and ``answer``.
    Caption: ``answer`` is the reference caption (``meta['captions']`` may hold more). Text: no image."""

    id: str
    image: ImageLike | None = None
    label: int | None = None
    question: str | None = None
    answer: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def load_image(self, dataset: str = "") -> Image.Image:
        if self.image is None:
            raise BadSampleError(f"sample {dataset}/{self.id} has no image", sample_id=self.id)
        try:
            return load_image(self.image, what=f"sample {dataset + '/' if dataset else ''}{self.id}")
        except BadSampleError as exc:
            exc.sample_id = self.id
            raise


@dataclass(frozen=True)
class ChoiceSettings:
    """How a multiple-choice set is scored. ``matcher``: one of :data:`CHOICE_MATCHERS`. ``circular``: MMBench's
    CircularEval (every question asked once per rotation of its options; right only when every rotation is).
    ``rank_by``: what rank mode scores, the option ``letter`` or the option ``text``."""

    matcher: str = "vlmevalkit"
    circular: bool = False
    rank_by: str = "letter"


@dataclass
class ImageDataset:
    """A named dataset: splits of samples plus its prompts, class names and synonyms (data, not code)."""

    name: str
    task: Task
    splits: dict[str, list[Sample]]
    class_names: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    description: str = ""
    version: str = "1"
    choice: ChoiceSettings | None = None  # multiple-choice sets: how answers are read and scored
    # free-answer benchmarks: the scorer of evaluation/scorers.py ("vqa", "exact", "pope"; "" = judged accuracy
    # only) and the answer list rank mode ranks and "names no class" reads against (empty: the set's references)
    metric: str = ""
    answer_list: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        try:
            return self.splits[name]
        except KeyError:
            raise DataError(
                f"dataset '{self.name}' has no split '{name}'; it has: {', '.join(self.splits)}"
            ) from None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def question_for(self, sample: Sample, template: int | str | None = None) -> str:
        """The prompt text of ``sample``. Classification: the dataset template (``None``: the first, EMT-style one).
        VQA: the sample's own question, followed by answer-format instruction ``template`` when one is given
        (LLaVA's "Answer the question using a single word or phrase."); ``None``: the bare question."""
        if sample.question:
            if template is None or not self.templates:
                return sample.question
            return f"{sample.question} {self._format_template(template)}"
        return self._format_template(0 if template is None else template)

    def _format_template(self, template: int | str) -> str:
        if isinstance(template, int):
            if not self.templates:
                raise DataError(f"dataset '{self.name}' has no prompt templates; add some to its dataset YAML")
            if not -len(self.templates) <= template < len(self.templates):
                raise DataError(f"template {template} is out of range: dataset '{self.name}' has "
                                f"{len(self.templates)} templates")
            template = self.templates[template]
        return template.format(classes=", ".join(self.class_names), n=len(self.class_names))

    def reference(self, sample: Sample) -> str:
        """The reference answer text of ``sample``."""
        if sample.answer is not None:
            return sample.answer
        if sample.label is not None:
            return self.class_names[sample.label]
        raise DataError(f"sample {self.name}/{sample.id} has neither an answer nor a label")

    def check_labels(self) -> None:
        """Every label index must lie inside the class list."""
        n = len(self.class_names)
        for split, samples in self.splits.items():
            for s in samples:
                if s.label is not None and not (0 <= s.label < n):
                    raise BadSampleError(
                        f"dataset '{self.name}' split '{split}' sample {s.id}: label {s.label} is outside "
                        f"the class list (0..{n - 1}); fix the label or the class list",
                        sample_id=s.id,
                    )


DatasetLoader = Callable[..., ImageDataset]
