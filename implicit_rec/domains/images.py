"""Grayscale crops of scikit-image's bundled sample photographs (nothing is downloaded).

Whole images are held out for the test set; the validation crops come from the bottom
``val_fraction`` of the rows of every training image and the training crops from the rows
above it, so no pixel is shared between the three splits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Natural photographs and textures bundled with scikit-image (skimage.data.<name>()).
TRAIN_IMAGES = (
    "astronaut",
    "coffee",
    "rocket",
    "moon",
    "brick",
    "grass",
    "gravel",
    "clock",
    "immunohistochemistry",
    "hubble_deep_field",
)
TEST_IMAGES = ("camera", "chelsea", "coins")
AVAILABLE = TRAIN_IMAGES + TEST_IMAGES


def load_gray(name: str, scale: float = 1.0) -> np.ndarray:
    """skimage.data.<name>() as float64 grayscale in [0, 1], (H, W), optionally rescaled (anti-aliased)."""
    try:
        import skimage.data
        from skimage.color import rgb2gray
        from skimage.transform import rescale
    except ImportError as err:
        raise ImportError(
            "the deblurring domain crops scikit-image's bundled photographs and needs the domains extra: "
            "pip install 'implicit-rec[domains]'"
        ) from err

    if name not in AVAILABLE:
        raise ValueError(f"image {name!r} is not one of the bundled images {', '.join(AVAILABLE)}.")
    img = getattr(skimage.data, name)()
    img = rgb2gray(img) if img.ndim == 3 else img.astype(np.float64) / (255.0 if img.dtype == np.uint8 else 1.0)
    if scale != 1.0:
        img = rescale(img, scale, anti_aliasing=True)
    return np.clip(img, 0.0, 1.0)


def random_crops(
    img: np.ndarray, n: int, size: int, rng: np.random.Generator, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """n crops (n, size, size) at uniform positions whose rows lie in [rows[0], rows[1])."""
    r0, r1 = rows if rows is not None else (0, img.shape[0])
    if r1 - r0 < size or img.shape[1] < size:
        raise ValueError(f"crop size {size} does not fit rows [{r0}, {r1}) x {img.shape[1]} columns.")
    i = rng.integers(r0, r1 - size + 1, n)
    j = rng.integers(0, img.shape[1] - size + 1, n)
    return np.stack([img[a : a + size, b : b + size] for a, b in zip(i, j)])


@dataclasses.dataclass(frozen=True)
class CropSplits:
    """Clean crops (N, size, size) in [0, 1] per split, and which images each split used."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_images: tuple
    test_images: tuple

    def sizes(self) -> dict:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def make_splits(
    *,
    size: int,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    scale: float = 0.5,
    train_images=TRAIN_IMAGES,
    test_images=TEST_IMAGES,
    val_fraction: float = 0.25,
) -> CropSplits:
    """Crops spread evenly over the images of each split (test images never enter train/val)."""
    train_images, test_images = tuple(train_images), tuple(test_images)
    overlap = set(train_images) & set(test_images)
    if overlap:
        raise ValueError(f"test images must be disjoint from training images; both contain {sorted(overlap)}.")
    if not train_images or not test_images:
        raise ValueError("train_images and test_images must both be non-empty.")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    rng = np.random.default_rng(seed)
    share = lambda n, m: [n // m + (i < n % m) for i in range(m)]  # noqa: E731
    train, val = [], []
    for name, nt, nv in zip(train_images, share(n_train, len(train_images)), share(n_val, len(train_images))):
        img = load_gray(name, scale)
        cut = int(round(img.shape[0] * (1.0 - val_fraction)))
        train.append(random_crops(img, nt, size, rng, (0, cut)))
        val.append(random_crops(img, nv, size, rng, (cut, img.shape[0])))
    test = [
        random_crops(load_gray(name, scale), n, size, rng)
        for name, n in zip(test_images, share(n_test, len(test_images)))
    ]
    return CropSplits(np.concatenate(train), np.concatenate(val), np.concatenate(test), train_images, test_images)
