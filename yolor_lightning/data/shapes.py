"""``shapes``: the embedded default dataset, a procedurally generated COCO-format detection set.

Each image holds 2-8 textured shapes of eight categories at COCO small / medium / large sizes, on a
cluttered background (lines and blurred blobs that are not objects). Later shapes may occlude
earlier ones: annotations give the *visible* box and the visible pixel area, and an object left
less than ``MIN_VISIBLE`` visible is not drawn at all, so no unannotated fragment remains.

Every object is an instance of a recurring *identity* (category + colours + texture) whose index
is the annotation's ``track_id``: identities recur across images and splits, for the emb task.

The dataset is a pure function of :class:`ShapesConfig`; it is written once to a cache folder named
after a hash of the config (see :func:`ensure_shapes`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from yolor_lightning.atomic import remove_stale_temporaries, temporary_sibling

CATEGORIES = ("circle", "square", "triangle", "star", "hexagon", "cross", "ring", "arrow")
TEXTURES = ("solid", "stripes", "speckle", "gradient")
PALETTE = (
    (220, 40, 40),
    (40, 170, 60),
    (40, 80, 220),
    (240, 200, 30),
    (200, 50, 200),
    (30, 200, 210),
    (245, 130, 20),
    (120, 60, 180),
    (240, 240, 240),
    (30, 30, 30),
)
# Target visible areas (px²) per COCO bucket (small < 32², medium < 96² <= large) and how often
# each bucket is drawn; occlusion only lowers areas, so ranges stay clear of the thresholds.
AREA_BUCKETS = ((144.0, 1000.0), (1100.0, 9000.0), (9400.0, 22000.0))
BUCKET_PROBS = (0.45, 0.35, 0.20)
MIN_VISIBLE = 0.4
MAX_BOX_OCCLUSION = 0.5
JPEG_QUALITY = 90
# Part of the cache key: bump when the generator's output changes for the same config.
GENERATOR_VERSION = 1
CACHE_ENV = "YOLOR_LIGHTNING_CACHE"


@dataclass(frozen=True)
class ShapesConfig:
    """Everything the generated dataset depends on (and nothing else)."""

    seed: int = 0
    num_train: int = 2400
    num_val: int = 300
    image_size: int = 256
    num_identities: int = 48
    min_objects: int = 2
    max_objects: int = 8


def default_cache_root() -> Path:
    """``$YOLOR_LIGHTNING_CACHE`` or ``~/.cache/yolor_lightning``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "yolor_lightning")


def dataset_dir(root: str | Path, config: ShapesConfig) -> Path:
    """The folder a complete dataset for ``config`` lives in under ``root``."""
    key = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(config)}, sort_keys=True)
    return Path(root).expanduser() / f"shapes-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def ensure_shapes(root: str | Path, config: ShapesConfig, workers: int | None = None) -> Path:
    """Return the dataset folder for ``config``, generating it first if it does not exist.

    Generation writes into a temporary sibling folder renamed into place at the end, so the
    final name only ever denotes a complete dataset. Concurrent callers (DDP ranks) may both
    generate; the loser of the rename drops its copy and uses the winner's. What a killed
    generation left behind is removed first. ``workers``
    processes draw the images (default: the CPU count, at most 8); the output does not depend on it.
    """
    workers = workers or min(os.cpu_count() or 1, 8)
    final = dataset_dir(root, config)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    tmp = temporary_sibling(final)
    tmp.mkdir()
    try:
        _generate(tmp, config, workers)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _generate(out: Path, config: ShapesConfig, workers: int) -> None:
    identities = _identities(config)
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)
    ]
    for split, count in (("train", config.num_train), ("val", config.num_val)):
        (out / split).mkdir()
        jobs = [(out, split, i, config, identities) for i in range(count)]
        if workers > 1:
            with get_context("fork").Pool(workers) as pool:
                records = pool.map(_render_image, jobs, chunksize=32)
        else:
            records = [_render_image(job) for job in jobs]
        images, annotations = [], []
        for image_id, (file_name, objects) in enumerate(records, start=1):
            size = config.image_size
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            for obj in objects:
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **obj}
                )
        coco = {
            "info": {"description": "yolor_lightning shapes", "config": dataclasses.asdict(config)},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (out / "annotations").mkdir(exist_ok=True)
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


@dataclass(frozen=True)
class _Identity:
    category: int
    texture: str
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    angle: float  # texture direction relative to the shape


def _identities(config: ShapesConfig) -> list[_Identity]:
    """A fixed pool of distinct identities, spread evenly over the categories."""
    rng = np.random.default_rng([config.seed, 0xC0DE])
    seen, pool = set(), []
    while len(pool) < config.num_identities:
        category = len(pool) % len(CATEGORIES)
        texture = TEXTURES[rng.integers(len(TEXTURES))]
        c1, c2 = rng.choice(len(PALETTE), size=2, replace=False)
        if (category, texture, c1, c2) in seen:
            continue
        seen.add((category, texture, c1, c2))
        angle = float(rng.uniform(0, math.pi))
        pool.append(_Identity(category, texture, (PALETTE[c1], PALETTE[c2]), angle))
    return pool


def _regular(n: int, radius: float = 0.5, start: float = -math.pi / 2) -> np.ndarray:
    t = start + np.arange(n) * 2 * math.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], 1)


def _star() -> np.ndarray:
    pts = _regular(10)
    pts[1::2] *= 0.42
    return pts


def _mirrored(upper: np.ndarray) -> np.ndarray:
    """Close an outline given from left to the tip on the x axis by mirroring it in y."""
    return np.concatenate([upper, upper[-2::-1] * (1, -1)])


def _cross() -> np.ndarray:
    """A plus sign, arms a third of the box wide: one arm's end turned four times."""
    arm_end = np.array([[-1, -3], [1, -3], [1, -1]]) / 6.0
    turn = np.array([[0, 1], [-1, 0]])
    return np.concatenate([arm_end @ np.linalg.matrix_power(turn, k) for k in range(4)])


# Outline and optional hole of each category, in a unit box centred on 0.
_OUTLINES: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    "circle": (_regular(40), None),
    "square": (np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]), None),
    "triangle": (np.array([[0.0, -0.5], [0.5, 0.5], [-0.5, 0.5]]), None),
    "star": (_star(), None),
    "hexagon": (_regular(6, start=0.0), None),
    "cross": (_cross(), None),
    "ring": (_regular(40), _regular(40, radius=0.28)),
    "arrow": (
        _mirrored(np.array([[-0.5, -0.15], [0.05, -0.15], [0.05, -0.5], [0.5, 0.0]])),
        None,
    ),
}


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


_FILL = {
    name: _polygon_area(outer) - (_polygon_area(hole) if hole is not None else 0.0)
    for name, (outer, hole) in _OUTLINES.items()
}


def _place(rng: np.random.Generator, category: str, size: int, boxes: list) -> tuple | None:
    """Sample a pose for one shape (outline, hole, box) that hides at most half of any box."""
    lo, hi = AREA_BUCKETS[rng.choice(len(AREA_BUCKETS), p=BUCKET_PROBS)]
    area = math.exp(rng.uniform(math.log(lo), math.log(hi))) / _FILL[category]
    aspect = math.exp(rng.uniform(-0.35, 0.35))
    wh = np.array([math.sqrt(area * aspect), math.sqrt(area / aspect)])
    theta = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    outer, hole = _OUTLINES[category]
    outer = (outer * wh) @ rot.T
    hole = None if hole is None else (hole * wh) @ rot.T
    lo_xy, hi_xy = outer.min(0), outer.max(0)
    extent = hi_xy - lo_xy
    if extent.max() > size - 2:
        shrink = (size - 2) / extent.max()
        outer, lo_xy, hi_xy = outer * shrink, lo_xy * shrink, hi_xy * shrink
        hole = None if hole is None else hole * shrink
    for _ in range(30):
        centre = rng.uniform(-lo_xy, size - hi_xy)
        box = np.concatenate([centre + lo_xy, centre + hi_xy])
        if all(_covered(box, other) <= MAX_BOX_OCCLUSION for other in boxes):
            return outer + centre, None if hole is None else hole + centre, box, theta
    return None


def _covered(top: np.ndarray, below: np.ndarray) -> float:
    """Fraction of box ``below`` covered by box ``top``."""
    w = min(top[2], below[2]) - max(top[0], below[0])
    h = min(top[3], below[3]) - max(top[1], below[1])
    return max(w, 0) * max(h, 0) / ((below[2] - below[0]) * (below[3] - below[1]))


Window = tuple[int, int, int, int]


def _mask(window: Window, outer: np.ndarray, hole: np.ndarray | None) -> np.ndarray:
    """The shape's pixels inside ``window`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = window
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon([tuple(p) for p in outer - (x0, y0)], fill=1)
    if hole is not None:
        draw.polygon([tuple(p) for p in hole - (x0, y0)], fill=0)
    return np.asarray(canvas, dtype=bool)


def _texture(
    rng: np.random.Generator, identity: _Identity, theta: float, shape: tuple[int, int]
) -> np.ndarray:
    """RGB float texture of ``shape`` (h, w) for one instance of ``identity``."""
    h, w = shape
    gain = rng.uniform(0.85, 1.15)
    c1, c2 = (np.array(c, dtype=np.float32) * gain for c in identity.colors)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = theta + identity.angle
    u = xx * math.cos(direction) + yy * math.sin(direction)
    if identity.texture == "solid":
        t = np.zeros_like(u)
    elif identity.texture == "stripes":
        period = max(4.0, 0.2 * min(h, w))
        t = (np.floor(u / (period / 2)) % 2).astype(np.float32)
    elif identity.texture == "speckle":
        cells = rng.random((h // 3 + 1, w // 3 + 1)) < 0.5
        t = np.kron(cells, np.ones((3, 3)))[:h, :w].astype(np.float32)
    else:
        t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    return c1 + (c2 - c1) * t[..., None] + rng.normal(0, 6, (h, w, 1)).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A colour gradient with clutter: blurred blobs and random lines."""
    c1, c2 = rng.uniform(40, 210, (2, 1, 1, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.arange(size, dtype=np.float32) / size
    t = (ramp[None, :] * math.cos(angle) + ramp[:, None] * math.sin(angle)) % 1.0
    image = Image.fromarray((c1 + (c2 - c1) * t[..., None]).astype(np.uint8)).convert("RGBA")
    # Blobs are drawn and blurred at a quarter of the resolution: same look, 16x fewer pixels.
    small = size // 4
    blobs = Image.new("RGBA", (small, small), (0, 0, 0, 0))
    draw = ImageDraw.Draw(blobs)
    for _ in range(rng.integers(2, 6)):
        x, y = rng.uniform(0, small, 2)
        rx, ry = rng.uniform(2, 10, 2)
        fill = (*(int(v) for v in rng.integers(0, 256, 3)), 150)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill)
    blobs = blobs.filter(ImageFilter.GaussianBlur(1.5)).resize((size, size), Image.BILINEAR)
    image = Image.alpha_composite(image, blobs)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(4, 13)):
        xy = [tuple(p) for p in rng.uniform(-20, size + 20, (2, 2))]
        fill = (*(int(v) for v in rng.integers(0, 256, 3)), 255)
        draw.line(xy, fill=fill, width=int(rng.integers(1, 4)))
    return image.convert("RGB")


def _render_image(job: tuple) -> tuple[str, list[dict]]:
    """Draw one image into ``out/split`` and return its file name and annotations."""
    out, split, index, config, identities = job
    size = config.image_size
    rng = np.random.default_rng([config.seed, 1 if split == "train" else 2, index])
    placed = []  # (identity index, outer, hole, box, theta)
    for _ in range(rng.integers(config.min_objects, config.max_objects + 1)):
        k = int(rng.integers(len(identities)))
        pose = _place(rng, CATEGORIES[identities[k].category], size, [p[3] for p in placed])
        if pose is not None:
            placed.append((k, *pose))
    windows = [_window(box, size) for _, _, _, box, _ in placed]
    masks = [_mask(w, p[1], p[2]) for w, p in zip(windows, placed, strict=True)]
    visible = _visible(size, windows, masks)
    keep = [i for i, m in enumerate(masks) if visible[i].sum() >= MIN_VISIBLE * m.sum()]
    windows, masks = [windows[i] for i in keep], [masks[i] for i in keep]
    visible = _visible(size, windows, masks)

    pixels = np.asarray(_background(rng, size), dtype=np.float32).copy()
    objects = []
    for i, (x0, y0, x1, y1), mask, vis in zip(keep, windows, masks, visible, strict=True):
        k, _, _, _, theta = placed[i]
        crop = pixels[y0:y1, x0:x1]
        crop[mask] = _texture(rng, identities[k], theta, mask.shape)[mask]
        cols, rows = np.flatnonzero(vis.any(0)), np.flatnonzero(vis.any(1))
        bbox = [x0 + cols[0], y0 + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
        objects.append(
            {
                "category_id": identities[k].category + 1,
                "bbox": [int(v) for v in bbox],
                "area": int(vis.sum()),
                "track_id": k + 1,
            }
        )
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * rng.uniform(3, 10)
    file_name = f"{index:06d}.jpg"
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.save(out / split / file_name, quality=JPEG_QUALITY)
    return file_name, objects


def _window(box: np.ndarray, size: int) -> Window:
    """Integer pixel window (x0, y0, x1, y1) containing ``box``, clipped to the image."""
    x0, y0 = (max(math.floor(v), 0) for v in box[:2])
    x1, y1 = (min(math.ceil(v) + 1, size) for v in box[2:])
    return x0, y0, x1, y1


def _visible(size: int, windows: list[Window], masks: list[np.ndarray]) -> list[np.ndarray]:
    """Per mask (in its window), the pixels still visible once all later masks are drawn on top."""
    owner = np.full((size, size), -1, dtype=np.int8)
    for i, ((x0, y0, x1, y1), mask) in enumerate(zip(windows, masks, strict=True)):
        owner[y0:y1, x0:x1][mask] = i
    return [
        (owner[y0:y1, x0:x1] == i) & mask
        for i, ((x0, y0, x1, y1), mask) in enumerate(zip(windows, masks, strict=True))
    ]
