"""scikit-learn's bundled 8x8 digits (real data, no download), scaled to [0, 1], fixed split."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

IMAGE_SIDE = 8
IMAGE_SIZE = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10


class DigitsSplit(NamedTuple):
    """Flattened images `[N, 64]` float32 in [0, 1] and labels `[N]` int32, train and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@functools.lru_cache(maxsize=4)
def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """The 1,797 digits, pixel values /16, split by a seeded permutation (same split every run)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    num_test = round(test_fraction * len(labels))
    test, train = order[:num_test], order[num_test:]
    split = DigitsSplit(images[train], labels[train], images[test], labels[test])
    for array in split:
        array.setflags(write=False)  # cached and shared: nobody may edit it in place
    return split
