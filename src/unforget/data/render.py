"""Procedural images for the embedded datasets: shapes, glyphs and multi-object scenes.

Every function here is a pure function of its arguments and an ``np.random.Generator``: the same
generator state gives byte-identical images on every machine. Glyphs use Pillow's bundled font
(``ImageFont.load_default``), never a system font, for the same reason.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Shapes are drawn at this multiple of the output size, then box-filtered down: cheap anti-aliasing.
_SUPERSAMPLE = 2
_CIRCLE_VERTICES = 48


def _regular_polygon(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    angles = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # image y points down
    pts = np.stack([x, y], axis=1)
    pts -= (pts.max(axis=0) + pts.min(axis=0)) / 2
    return pts / np.abs(pts).max()


_CROSS_ARM = 0.32
_CROSS = np.array(
    [
        (-_CROSS_ARM, -1), (_CROSS_ARM, -1), (_CROSS_ARM, -_CROSS_ARM), (1, -_CROSS_ARM),
        (1, _CROSS_ARM), (_CROSS_ARM, _CROSS_ARM), (_CROSS_ARM, 1), (-_CROSS_ARM, 1),
        (-_CROSS_ARM, _CROSS_ARM), (-1, _CROSS_ARM), (-1, -_CROSS_ARM), (-_CROSS_ARM, -_CROSS_ARM),
    ],
    dtype=float,
) * 0.9
_ARROW = np.array(
    [(-1, -0.25), (0.15, -0.25), (0.15, -0.65), (1, 0), (0.15, 0.65), (0.15, 0.25), (-1, 0.25)], dtype=float
)

# Each shape is a list of (polygon in a unit box centred on 0, fill value): 255 draws, 0 cuts a hole.
# Sizes are tuned so the shapes cover similar areas at the same radius.
SHAPE_POLYGONS: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_regular_polygon(_CIRCLE_VERTICES) * 0.85, 255)],
    "square": [(_regular_polygon(4, np.pi / 4) * 0.95, 255)],
    "triangle": [(_regular_polygon(3) * 1.0 + np.array([0.0, 0.2]), 255)],
    "star": [(_star(), 255)],
    "hexagon": [(_regular_polygon(6) * 0.9, 255)],
    "cross": [(_CROSS, 255)],
    "heart": [(_heart() * 0.95, 255)],
    "arrow": [(_ARROW, 255)],
    "ring": [(_regular_polygon(_CIRCLE_VERTICES) * 0.95, 255), (_regular_polygon(_CIRCLE_VERTICES) * 0.55, 0)],
    "diamond": [(np.array([(0, -1), (0.58, 0), (0, 1), (-0.58, 0)], dtype=float), 255)],
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPE_POLYGONS)

# Colour families for the colour-shapes set: (name, hue in degrees, saturation range, value range).
# Pink is told from red and purple by its low saturation, not only by its hue.
COLOUR_FAMILIES: dict[str, tuple[float, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, (0.75, 1.0), (0.7, 1.0)),
    "orange": (28.0, (0.8, 1.0), (0.85, 1.0)),
    "yellow": (56.0, (0.75, 1.0), (0.85, 1.0)),
    "green": (120.0, (0.6, 1.0), (0.55, 0.95)),
    "cyan": (182.0, (0.6, 1.0), (0.75, 1.0)),
    "blue": (228.0, (0.65, 1.0), (0.7, 1.0)),
    "purple": (280.0, (0.55, 0.9), (0.55, 0.9)),
    "pink": (328.0, (0.3, 0.5), (0.9, 1.0)),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOUR_FAMILIES)
_HUE_JITTER_DEG = 8.0


def _luminance(rgb: tuple[int, int, int]) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _hsv_colour(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def sample_named_colour(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    """An RGB colour from the colour family ``name``, with jitter in hue, saturation and value."""
    hue, (s_lo, s_hi), (v_lo, v_hi) = COLOUR_FAMILIES[name]
    h = ((hue + rng.uniform(-_HUE_JITTER_DEG, _HUE_JITTER_DEG)) % 360.0) / 360.0
    return _hsv_colour(h, rng.uniform(s_lo, s_hi), rng.uniform(v_lo, v_hi))


def sample_contrasting_colour(
    rng: np.random.Generator, background: tuple[int, int, int], min_contrast: float = 70.0
) -> tuple[int, int, int]:
    """A random colour whose luminance differs from the ``background`` colour's by at least ``min_contrast``."""
    bg_lum = _luminance(background)
    for _ in range(32):
        rgb = _hsv_colour(rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.15, 1.0))
        if abs(_luminance(rgb) - bg_lum) >= min_contrast:
            return rgb
    return (0, 0, 0) if bg_lum > 127.5 else (255, 255, 255)  # the extreme farthest from the background


def textured_background(
    rng: np.random.Generator,
    size: int,
    *,
    saturation: tuple[float, float] = (0.0, 0.6),
    value: tuple[float, float] = (0.1, 0.9),
    blotch: float = 40.0,
) -> tuple[Image.Image, tuple[int, int, int]]:
    """A smooth random colour field (a base colour plus low-frequency blotches) and its base colour."""
    base = _hsv_colour(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    cells = int(rng.integers(3, 7))
    coarse = np.asarray(base, dtype=np.float64) + rng.uniform(-blotch, blotch, size=(cells, cells, 3))
    coarse_img = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "RGB")
    return coarse_img.resize((size, size), Image.BILINEAR), base


def shape_mask(
    shape: str, size: int, centre: tuple[float, float], radius: float, angle_deg: float = 0.0
) -> Image.Image:
    """Anti-aliased coverage mask (mode "L") of ``shape`` centred at ``centre`` (pixels)."""
    scale = _SUPERSAMPLE
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    theta = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    offset = np.array(centre, dtype=float) * scale
    for polygon, fill in SHAPE_POLYGONS[shape]:
        pts = polygon @ rot.T * radius * scale + offset
        draw.polygon([tuple(p) for p in pts.round(2).tolist()], fill=fill)
    return canvas.resize((size, size), Image.BOX)


@functools.lru_cache(maxsize=64)
def _bundled_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's embedded Aileron: identical on every machine


def glyph_mask(
    text: str, size: int, centre: tuple[float, float], font_size: int, angle_deg: float = 0.0
) -> Image.Image:
    """Coverage mask (mode "L") of ``text`` in Pillow's bundled font, centred and rotated at ``centre``."""
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).text(centre, text, font=_bundled_font(font_size), fill=255, anchor="mm")
    if angle_deg:
        canvas = canvas.rotate(angle_deg, resample=Image.BILINEAR, center=centre)
    return canvas


def distractor_lines(rng: np.random.Generator, image: Image.Image, count: int) -> None:
    """Draw thin random lines in random colours onto ``image``: clutter a classifier has to look past."""
    draw = ImageDraw.Draw(image)
    size = image.size[0]
    for _ in range(count):
        xy = [tuple(p) for p in rng.uniform(0, size, size=(2, 2)).round(1).tolist()]
        draw.line(xy, fill=tuple(int(c) for c in rng.integers(0, 256, size=3)), width=1)


_NOISE_SEED = 20_240_601


@functools.lru_cache(maxsize=64)
def _noise_bank(std: int, size: int) -> np.ndarray:
    """A fixed tile of Gaussian pixel noise (int16), cropped at random offsets: far cheaper than fresh noise."""
    bank = np.random.default_rng([_NOISE_SEED, size]).standard_normal((2 * size, 2 * size, 3))
    out = np.rint(bank * std).astype(np.int16)
    out.flags.writeable = False
    return out


def finish(rng: np.random.Generator, image: Image.Image, noise_std: int) -> np.ndarray:
    """Add pixel noise and return an RGB uint8 array (read-only: cached datasets share it)."""
    pixels = np.asarray(image, dtype=np.int16)
    if noise_std > 0:
        size = image.size[0]
        y, x = rng.integers(0, size + 1, size=2)
        pixels = pixels + _noise_bank(int(noise_std), size)[y : y + size, x : x + size]
        np.clip(pixels, 0, 255, out=pixels)
    out = pixels.astype(np.uint8)
    out.flags.writeable = False
    return out


# Placement ranges, as fractions of the image side. Objects stay near the centre: a raw-pixel classifier
# must still be able to learn the classes (like CIFAR's roughly centred objects), so the difficulty comes
# from colour, rotation, scale, clutter and noise rather than from a position prior no one could learn.
POSITION_JITTER = 0.12
RADIUS_RANGE = (0.24, 0.34)
SHAPE_ROTATION_DEG = 30.0
LETTER_ROTATION_DEG = 20.0
LETTER_SIZE_RANGE = (0.5, 0.72)


def _random_centre(rng: np.random.Generator, size: int) -> tuple[float, float]:
    jitter = POSITION_JITTER * size
    return (size / 2 + rng.uniform(-jitter, jitter), size / 2 + rng.uniform(-jitter, jitter))


def _placed_shape_mask(rng: np.random.Generator, shape: str, size: int) -> Image.Image:
    centre, radius = _random_centre(rng, size), rng.uniform(*RADIUS_RANGE) * size
    return shape_mask(shape, size, centre, radius, rng.uniform(-SHAPE_ROTATION_DEG, SHAPE_ROTATION_DEG))


def render_shape(rng: np.random.Generator, shape: str, size: int = 64) -> np.ndarray:
    """One shape of random colour, size, position and rotation on a noisy, cluttered textured background."""
    image, base = textured_background(rng, size)
    colour = sample_contrasting_colour(rng, base)
    distractor_lines(rng, image, int(rng.integers(0, 3)))
    image.paste(colour, (0, 0, size, size), _placed_shape_mask(rng, shape, size))
    return finish(rng, image, int(rng.integers(4, 15)))


def render_coloured_shape(rng: np.random.Generator, colour_name: str, shape: str, size: int = 64) -> np.ndarray:
    """A shape in a named colour family on a dark, low-saturation textured background (so the colour reads)."""
    image, _ = textured_background(rng, size, saturation=(0.0, 0.15), value=(0.08, 0.45), blotch=25.0)
    colour = sample_named_colour(rng, colour_name)
    distractor_lines(rng, image, int(rng.integers(0, 2)))
    image.paste(colour, (0, 0, size, size), _placed_shape_mask(rng, shape, size))
    return finish(rng, image, int(rng.integers(3, 11)))


def render_letter(rng: np.random.Generator, letter: str, size: int = 64) -> np.ndarray:
    """An uppercase glyph of random size, rotation, position and colours, with clutter and noise."""
    image, base = textured_background(rng, size)
    colour = sample_contrasting_colour(rng, base)
    distractor_lines(rng, image, int(rng.integers(0, 3)))
    font_size = int(rng.integers(round(size * LETTER_SIZE_RANGE[0]), round(size * LETTER_SIZE_RANGE[1]) + 1))
    angle = rng.uniform(-LETTER_ROTATION_DEG, LETTER_ROTATION_DEG)
    image.paste(colour, (0, 0, size, size), glyph_mask(letter, size, _random_centre(rng, size), font_size, angle))
    return finish(rng, image, int(rng.integers(4, 15)))


# --- multi-object scenes (VQA and captioning) -------------------------------------------------------

# Scenes use a smaller, well-separated vocabulary so every question has one clear answer.
SCENE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 50),
    "blue": (40, 70, 225),
    "yellow": (240, 215, 30),
    "purple": (140, 50, 190),
    "orange": (245, 135, 20),
}
SCENE_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
# Objects sit one per quadrant, so "left/right" and "top/bottom" are never ambiguous.
QUADRANTS: tuple[tuple[str, str], ...] = (("top", "left"), ("top", "right"), ("bottom", "left"), ("bottom", "right"))


@dataclass(frozen=True)
class SceneObject:
    """One object in a scene: what it is and which quadrant it sits in."""

    shape: str
    colour: str
    quadrant: int  # index into QUADRANTS

    @property
    def vertical(self) -> str:
        return QUADRANTS[self.quadrant][0]

    @property
    def horizontal(self) -> str:
        return QUADRANTS[self.quadrant][1]

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"


def render_scene(rng: np.random.Generator, objects: list[SceneObject], size: int = 64) -> np.ndarray:
    """Draw ``objects`` (one per quadrant) on a light, low-saturation textured background."""
    image, _ = textured_background(rng, size, saturation=(0.0, 0.12), value=(0.8, 0.97), blotch=15.0)
    cell = size / 2
    for obj in objects:
        row, col = divmod(obj.quadrant, 2)
        radius = rng.uniform(0.26, 0.36) * cell
        jitter = cell / 2 - radius - 1
        centre = (
            col * cell + cell / 2 + rng.uniform(-jitter, jitter),
            row * cell + cell / 2 + rng.uniform(-jitter, jitter),
        )
        jittered = np.clip(np.asarray(SCENE_COLOURS[obj.colour]) + rng.integers(-12, 13, size=3), 0, 255)
        mask = shape_mask(obj.shape, size, centre, radius, rng.uniform(-15, 15))
        image.paste(tuple(int(c) for c in jittered), (0, 0, size, size), mask)
    return finish(rng, image, int(rng.integers(2, 7)))
