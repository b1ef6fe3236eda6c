"""The reference corruptions (the ``imagecorruptions`` package) for the cross-checks, and real test images.

``reference(image, name, severity, seed)`` calls ``imagecorruptions.corrupt`` on a uint8 image after
``np.random.seed(seed)``. The package predates NumPy 2 and scikit-image 0.19's API, so three of its functions
fail as installed; ``compatible()`` bridges exactly those calls and nothing else: ``skimage.filters.gaussian``'s
removed ``multichannel=True`` becomes ``channel_axis=-1`` (the same filter), and ``np.float_`` (removed in NumPy
2) is ``np.float64`` (what it aliased). impulse_noise draws from scikit-image's ``random_noise`` with a fresh
``default_rng()``; ``compatible(impulse_seed=...)`` seeds that generator so the test is repeatable.

``ReplayRng`` is a ``SampleRng`` whose draws are the reference's own: a ``numpy.random.RandomState`` per sample,
seeded as the reference call is, answering each draw with the same numpy call. When nnaudit's corruption asks
for the same draws in the same order (what audit.shift.sampling promises), it sees the reference's random
numbers, and everything after the draws can be compared exactly.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def import_reference() -> object:
    """The imagecorruptions module (its import warns that pkg_resources is deprecated: only that is silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import imagecorruptions

    return imagecorruptions


@contextlib.contextmanager
def compatible(impulse_seed: int | None = None) -> Iterator[None]:
    import skimage.filters
    import skimage.util

    module = import_reference().corruptions  # type: ignore[attr-defined]
    original_gaussian = module.gaussian
    original_noise = skimage.util.random_noise
    had_float = hasattr(np, "float_")

    def gaussian(image: np.ndarray, *args: object, multichannel: bool | None = None, **kwargs: object) -> np.ndarray:
        if multichannel:
            kwargs["channel_axis"] = -1
        return skimage.filters.gaussian(image, *args, **kwargs)  # type: ignore[arg-type]

    module.gaussian = gaussian
    if not had_float:
        np.float_ = np.float64  # type: ignore[attr-defined]
    if impulse_seed is not None:
        skimage.util.random_noise = functools.partial(original_noise, rng=np.random.default_rng(impulse_seed))
    try:
        yield
    finally:
        module.gaussian = original_gaussian
        skimage.util.random_noise = original_noise
        if not had_float:
            del np.float_  # type: ignore[attr-defined]


def reference(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``imagecorruptions.corrupt`` on a uint8 (H, W, 3) or (H, W) image after ``np.random.seed(seed)``."""
    ic = import_reference()
    with compatible(impulse_seed=seed if name == "impulse_noise" else None):
        np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy / skimage deprecations inside the reference
            return np.asarray(ic.corrupt(image, corruption_name=name, severity=severity))  # type: ignore[attr-defined]


def reference_function(name: str) -> object:
    """The reference's corruption function itself (to reach its gray branch with a 2-D image)."""
    return getattr(import_reference().corruptions, name)  # type: ignore[attr-defined]


class ReplayRng:
    """``SampleRng`` drawing the reference's numbers: one legacy ``RandomState`` per sample."""

    def __init__(self, seeds: Sequence[int], dtype: torch.dtype = torch.float64) -> None:
        self.states = [np.random.RandomState(int(s)) for s in seeds]
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.states)

    def _stack(self, draws: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.stack([np.asarray(d) for d in draws])).to(dtype)

    def uniform(self, low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
        return self._stack([s.uniform(low, high, shape if shape else None) for s in self.states], self.dtype)

    def normal(self, loc: float, scale: float, shape: tuple[int, ...]) -> torch.Tensor:
        return self._stack([s.normal(loc, scale, shape if shape else None) for s in self.states], self.dtype)

    def randint(self, low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        # one call for many values draws what as many calls for a few would, in order (the glass blur's pairs)
        return self._stack([s.randint(low, high, shape if shape else None) for s in self.states], torch.int64)

    def randint_each(self, low: int, highs: Sequence[int]) -> torch.Tensor:
        return self._stack([s.randint(low, int(h)) for s, h in zip(self.states, highs, strict=True)], torch.int64)

    def poisson(self, lam: torch.Tensor) -> torch.Tensor:
        return self._stack([s.poisson(lam[i].double().numpy()) for i, s in enumerate(self.states)], lam.dtype)


# -- real images --------------------------------------------------------------------------------------------


@functools.cache
def fashion_images(count: int = 64) -> np.ndarray:
    """The first ``count`` Fashion-MNIST test images (28x28 uint8), padded by 2 pixels of background to 32x32."""
    from system import fashion_mnist_missing, need

    need(fashion_mnist_missing())
    with gzip.open(FASHION, "rb") as handle:
        data = handle.read()
    images = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))


@functools.cache
def photo_crops(height: int = 32, width: int = 32) -> np.ndarray:
    """RGB uint8 crops of scikit-learn's two sample photographs (china, flower), downscaled 4x by block means
    (real colour, edges and texture at a small size): (4, height, width, 3)."""
    from sklearn.datasets import load_sample_images

    crops = []
    for photo in load_sample_images().images:
        small = photo[: photo.shape[0] // 4 * 4, : photo.shape[1] // 4 * 4].reshape(
            photo.shape[0] // 4, 4, photo.shape[1] // 4, 4, 3).mean(axis=(1, 3))
        for top, left in ((20, 30), (50, 90)):
            crops.append(np.round(small[top : top + height, left : left + width]).astype(np.uint8))
    return np.stack(crops)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (N, H, W) -> float64 (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(images, dtype=torch.float64) / 255
    return t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]
