"""`synthetic_shapes`: coloured shapes on textured, noisy backgrounds, rendered from a seed.

Every example is a pure function of (split, index), so the dataset is identical on every machine
and needs no download. Each image shows one shape of a random size, position, rotation and colour
over a random background texture (gradient, stripes, checkerboard or blobs), plus pixel noise and
a few thin distractor strokes; the label is the shape. Colour and texture carry no information,
so a model has to learn shape, which takes it a few epochs.

The `transfer` configuration draws five other shapes, which the default configuration never
shows, with 40 training images per class: what fine-tuning a pretrained model is for.

The `detection` configurations draw one to four smaller shapes that do not touch, each with the
tight box of its pixels, in the layout of TFDS's coco and voc (`objects/bbox`, `objects/label`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

CLASSES = (
    "circle",
    "ring",
    "triangle",
    "square",
    "star",
    "cross",
    "crescent",
    "heart",
    "half_disk",
    "bowtie",
)

# The four shapes furthest apart, for the tiny and detection configurations.
DISTINCT_CLASSES = ("circle", "triangle", "square", "cross")
# Shapes that no other configuration draws, for the transfer configuration.
TRANSFER_CLASSES = ("arrow", "tee", "pacman", "frame", "ellipse")

_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """Image side, number of examples per split, the shapes drawn, and whether to add clutter
    (textured backgrounds, distractor strokes, strong noise) or draw on a flat colour."""

    image_size: int = 96
    sizes: tuple = ()
    classes: tuple = CLASSES
    cluttered: bool = True
    # Labels in turn (index modulo the class count) rather than drawn: equal class sizes.
    balanced: bool = False
    # Detection: up to this many shapes per image, of radii in this fraction of the image side.
    max_objects: int = 0
    radius_range: tuple = (0.13, 0.3)


def _polygon_radius(theta: np.ndarray, sides: int) -> np.ndarray:
    """Boundary radius of a regular polygon with unit circumradius, at polar angle `theta`."""
    sector = 2 * np.pi / sides
    return np.cos(np.pi / sides) / np.cos(np.mod(theta, sector) - np.pi / sides)


def _shape_mask(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside-test of shape `name` in its own frame: unit size, centred, upright."""
    r, theta = np.hypot(x, y), np.arctan2(y, x) + np.pi / 2
    if name == "circle":
        return r <= 1.0
    if name == "ring":
        return (r <= 1.0) & (r >= 0.6)
    if name in ("triangle", "square"):
        return r <= _polygon_radius(theta, 3 if name == "triangle" else 4)
    if name == "star":
        sector = np.mod(theta, 2 * np.pi / 5) / (2 * np.pi / 5)
        return r <= 0.4 + 0.6 * np.abs(2 * sector - 1) ** 2
    if name == "cross":
        return ((np.abs(x) <= 0.3) | (np.abs(y) <= 0.3)) & (np.maximum(np.abs(x), np.abs(y)) <= 1)
    if name == "crescent":
        return (r <= 1.0) & (np.hypot(x - 0.45, y + 0.15) > 0.8)
    if name == "heart":
        hx, hy = 1.2 * x, -1.2 * y + 0.25
        return (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
    if name == "half_disk":
        return (r <= 1.0) & (y >= -0.2)
    if name == "bowtie":
        return (np.abs(y) <= np.abs(x) * 0.9) & (np.abs(x) <= 1.0)
    if name == "arrow":
        shaft = (np.abs(y) <= 0.2) & (x >= -1.0) & (x <= 0.2)
        return shaft | ((x >= 0.1) & (x <= 1.0) & (np.abs(y) <= 0.8 * (1.0 - x)))
    if name == "tee":
        return (((np.abs(x) <= 1.0) & (y >= 0.45) & (y <= 1.0))
                | ((np.abs(x) <= 0.25) & (y >= -1.0) & (y <= 0.45)))
    if name == "pacman":
        return (r <= 1.0) & (np.abs(np.arctan2(y, x)) > 0.6)
    if name == "frame":
        side = np.maximum(np.abs(x), np.abs(y))
        return (side <= 0.85) & (side >= 0.55)
    if name == "ellipse":
        return x**2 + (y / 0.5) ** 2 <= 1.0
    raise ValueError(name)


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    base = rng.uniform(0, 255, 3)
    other = np.clip(base + rng.uniform(-70, 70, 3), 0, 255)
    kind = rng.integers(4)
    angle = rng.uniform(0, np.pi)
    u = (np.cos(angle) * xx + np.sin(angle) * yy) / size
    if kind == 0:
        weight = u - u.min()
        weight /= max(weight.max(), 1e-6)
    elif kind == 1:
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * u * rng.uniform(2, 8) + rng.uniform(0, 2 * np.pi))
    elif kind == 2:
        cell = rng.uniform(4, size / 4)
        weight = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:
        weight = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(3, 8)):
            cy, cx, radius = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 10, size / 3)]
            weight += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        weight = np.clip(weight, 0, 1)
    return base + weight[..., None] * (other - base)


def _clutter(rng: np.random.Generator, image_size: int, yy, xx, cluttered: bool) -> np.ndarray:
    """A float background: a texture with a few distractor strokes, or a flat colour."""
    if not cluttered:
        return np.broadcast_to(rng.uniform(0, 255, 3), (image_size, image_size, 3)).copy()
    image = _background(rng, image_size, yy, xx)
    for _ in range(rng.integers(0, 3)):
        y0, x0 = rng.uniform(0, image_size, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.1, 0.4) * image_size
        along = (xx - x0) * np.cos(angle) + (yy - y0) * np.sin(angle)
        across = -(xx - x0) * np.sin(angle) + (yy - y0) * np.cos(angle)
        stroke = (np.abs(across) <= 1.0) & (along >= 0) & (along <= length)
        image[stroke] = rng.uniform(0, 255, 3)
    return image


def _draw_shape(rng: np.random.Generator, image: np.ndarray, yy, xx, name: str, radius: float,
                cy: float, cx: float) -> np.ndarray:
    """Paints shape `name` (random rotation, a colour that stands out, a shade) into `image`;
    returns its mask."""
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = (xx - cx) / radius, (yy - cy) / radius
    x = np.cos(angle) * dx + np.sin(angle) * dy
    y = -np.sin(angle) * dx + np.cos(angle) * dy
    mask = _shape_mask(name, x, y)
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - image[mask].mean(axis=0)).max() < 100:  # keep the shape visible
        colour = rng.uniform(0, 255, 3)
    shade = 1.0 + rng.uniform(-0.25, 0.25) * (x / 2)
    image[mask] = np.clip(colour * shade[mask][:, None], 0, 255)
    return mask


def _finish(rng: np.random.Generator, image: np.ndarray, cluttered: bool) -> np.ndarray:
    image += rng.normal(0, rng.uniform(2, 10) if cluttered else 2, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def render_example(
    split: str, index: int, image_size: int = 96, classes: tuple = CLASSES, cluttered: bool = True,
    balanced: bool = False,
) -> tuple[np.ndarray, int]:
    """The (uint8 image, label) of example `index` of `split`; a pure function of its arguments."""
    rng = np.random.default_rng([_SPLIT_SEEDS[split], index])
    label = int(rng.integers(len(classes)))
    if balanced:
        label = index % len(classes)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    image = _clutter(rng, image_size, yy, xx, cluttered)
    radius = rng.uniform(0.25, 0.45) * image_size
    cy, cx = rng.uniform(radius * 0.8, image_size - radius * 0.8, 2)
    _draw_shape(rng, image, yy, xx, classes[label], radius, cy, cx)
    return _finish(rng, image, cluttered), label


def render_detection_example(
    split: str,
    index: int,
    image_size: int = 128,
    classes: tuple = CLASSES,
    cluttered: bool = True,
    max_objects: int = 4,
    radius_range: tuple = (0.13, 0.3),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (uint8 image, float32 boxes, int64 labels) of detection example `index` of `split`:
    one to `max_objects` shapes that do not touch, each box the tight (ymin, xmin, ymax, xmax) of
    its pixels as fractions of the image side. A pure function of its arguments."""
    rng = np.random.default_rng([_SPLIT_SEEDS[split], index, 1])
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    image = _clutter(rng, image_size, yy, xx, cluttered)
    placed, boxes, labels = [], [], []
    for _ in range(rng.integers(1, max_objects + 1)):
        for _attempt in range(20):  # a free spot, else one shape fewer
            radius = rng.uniform(*radius_range) * image_size
            cy, cx = rng.uniform(radius, image_size - radius, 2)
            if all(np.hypot(cy - y, cx - x) > radius + r + 2 for y, x, r in placed):
                break
        else:
            continue
        label = int(rng.integers(len(classes)))
        mask = _draw_shape(rng, image, yy, xx, classes[label], radius, cy, cx)
        rows, columns = np.nonzero(mask)
        placed.append((cy, cx, radius))
        boxes.append([rows.min(), columns.min(), rows.max() + 1, columns.max() + 1])
        labels.append(label)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / image_size
    return _finish(rng, image, cluttered), boxes, np.asarray(labels, np.int64)


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
    """Coloured shapes rendered on textured backgrounds; no download."""

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Distinct shapes (half disk, bowtie for pentagon, hexagon), larger, more contrast, "
        "subtler textures and noise.",
        "1.2.0": "tiny: shapes on a flat colour, without clutter, so that tests learn in few steps.",
        "1.3.0": "tiny: 2,000 test images (was 300; the first 300 are unchanged), so that tests "
        "measure int8 agreement to a fraction of a point.",
    }
    BUILDER_CONFIGS = [
        ShapesConfig(
            name="default",
            description="96x96 images; 10,000 train, 1,000 validation, 2,000 test.",
            image_size=96,
            sizes=(("train", 10_000), ("validation", 1_000), ("test", 2_000)),
        ),
        ShapesConfig(
            name="tiny",
            description="4 classes, 48x48 images on a flat colour; 1,200 train, 200 validation, "
            "2,000 test: quick to learn, for tests.",
            image_size=48,
            sizes=(("train", 1_200), ("validation", 200), ("test", 2_000)),
            classes=DISTINCT_CLASSES,
            cluttered=False,
        ),
        ShapesConfig(
            name="transfer",
            version=tfds.core.Version("1.0.0"),
            description="5 shapes that the other configurations never draw, 96x96 on textured "
            "backgrounds; 200 train (40 per class), 100 validation, 2,000 test: for fine-tuning.",
            image_size=96,
            sizes=(("train", 200), ("validation", 100), ("test", 2_000)),
            classes=TRANSFER_CLASSES,
            balanced=True,
        ),
        ShapesConfig(
            name="detection",
            version=tfds.core.Version("1.0.0"),
            description="Detection: 128x128 images of 1-4 shapes of 4 classes with their boxes, "
            "on textured backgrounds; 8,000 train, 500 validation, 1,000 test.",
            image_size=128,
            sizes=(("train", 8_000), ("validation", 500), ("test", 1_000)),
            classes=DISTINCT_CLASSES,
            max_objects=4,
        ),
        ShapesConfig(
            name="detection_tiny",
            version=tfds.core.Version("1.0.0"),
            description="Detection, for tests: 64x64 images of 1-3 shapes of 4 classes on a flat "
            "colour; 1,200 train, 200 validation, 300 test.",
            image_size=64,
            sizes=(("train", 1_200), ("validation", 200), ("test", 300)),
            classes=DISTINCT_CLASSES,
            cluttered=False,
            max_objects=3,
            radius_range=(0.2, 0.4),
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        image = tfds.features.Image(shape=(config.image_size,) * 2 + (3,), encoding_format="jpeg")
        label = tfds.features.ClassLabel(names=config.classes)
        if config.max_objects:
            objects = tfds.features.Sequence({"bbox": tfds.features.BBoxFeature(), "label": label})
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict({"image": image, "objects": objects})
            )
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"image": image, "label": label}),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split, count) for split, count in self.builder_config.sizes}

    def _generate_examples(self, split: str, count: int):
        config = self.builder_config
        for index in range(count):
            if config.max_objects:
                image, boxes, labels = render_detection_example(
                    split, index, config.image_size, config.classes, config.cluttered,
                    config.max_objects, config.radius_range,
                )
                yield index, {"image": image, "objects": {"bbox": boxes, "label": labels}}
            else:
                image, label = render_example(
                    split, index, config.image_size, config.classes, config.cluttered,
                    config.balanced,
                )
                yield index, {"image": image, "label": label}
