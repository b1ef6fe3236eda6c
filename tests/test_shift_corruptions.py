"""Properties of nnaudit's corruptions that hold whatever the reference does: bounds, shape and dtype kept on any
size and range, the raw range mapped linearly, gray images treated as RGB with three equal channels, severity
ordering, determinism under a seed and a sample's corruption independent of its batch; and the per-sample
generators' distributions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats
from shift_reference import fashion_images, photo_crops, to_tensor

from audit.shift import catalog
from audit.shift.catalog import IMAGE_CORRUPTIONS, RANDOM, SEVERITIES
from audit.shift.corruptions import CorruptionError, auto_pixel_scale, corrupt
from audit.shift.sampling import TorchSampleRng, sample_seeds

ALPHA = 1e-4
# mean |perturbation| rises with severity by definition (the reference's parameters all grow) for these; the others
# do not: glass_blur shuffles 2, 1, 3, 2, 2 times; snow's severity 3 raises the flake threshold from 0.5 to 0.9;
# frost trades image weight (1, .8, .7, .65, .6) against frost weight (.4, .6, .7, .7, .75); fog's severities 3 and 4
# share the strength 2.5; spatter is water at 1-3 and mud at 4-5; saturate scales saturation by .3, .1, 2, 5, 20.
MONOTONE = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "motion_blur",
            "zoom_blur", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression", "gaussian_blur"]
# one operation per channel, and what random draws they make do not depend on the channel count
CHANNELWISE = ["defocus_blur", "zoom_blur", "contrast", "pixelate", "gaussian_blur", "brightness", "jpeg_compression",
               "motion_blur", "glass_blur", "elastic_transform", "fog", "snow"]


def digits(count: int = 48) -> torch.Tensor:
    from audit.data import load_digits_data

    return torch.as_tensor(load_digits_data("test").x[:count], dtype=torch.float64)


def _seeds(name: str, severity: int, n: int, run: int = 0) -> list[int]:
    return sample_seeds(run, "props", name, severity, range(n))


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_bounds_shape_dtype_on_any_size_and_range(name: str) -> None:
    gen = torch.Generator().manual_seed(3)
    shapes = [(3, 3, 32, 32), (3, 3, 20, 37), (3, 1, 8, 8), (3, 8, 8), (2, 1, 5, 64)]
    for shape in shapes:
        channels = shape[1] if len(shape) == 4 else 1
        if name == "saturate" and channels == 1:
            continue
        for lo, hi, dtype in ((0.0, 1.0, torch.float32), (-1.0, 2.0, torch.float64), (0.0, 255.0, torch.float32)):
            x = (lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)
            for severity in (1, 5):
                y = corrupt(x, name, severity, bounds=(lo, hi), seeds=list(range(shape[0])))
                assert y.shape == x.shape and y.dtype == x.dtype, (name, shape)
                assert torch.isfinite(y).all() and y.min() >= lo and y.max() <= hi, (name, shape, lo, hi)


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_raw_range_is_mapped_linearly(name: str) -> None:
    """A model whose inputs are 0..255 or -1..1 gets the same corruption as one on 0..1, in its own units."""
    x = to_tensor(photo_crops())
    seeds = _seeds(name, 4, len(x))
    unit = corrupt(x, name, 4, seeds=seeds)
    assert torch.allclose(corrupt(255 * x, name, 4, bounds=(0, 255), seeds=seeds), 255 * unit, atol=1e-6)
    assert torch.allclose(corrupt(2 * x - 1, name, 4, bounds=(-1, 1), seeds=seeds), 2 * unit - 1, atol=1e-9)


@pytest.mark.parametrize("name", MONOTONE)
def test_perturbation_grows_with_severity(name: str) -> None:
    for images in (to_tensor(photo_crops()), to_tensor(fashion_images(16)), digits()):
        sizes = []
        for severity in SEVERITIES:
            runs = [(corrupt(images, name, severity, seeds=_seeds(name, severity, len(images), r)) - images)
                    .abs().mean() for r in range(3)]
            sizes.append(float(np.mean(runs)))
        assert all(b >= a for a, b in itertools.pairwise(sizes)), (name, images.shape, sizes)
        assert sizes[-1] > sizes[0], (name, sizes)


@pytest.mark.parametrize("name", CHANNELWISE)
def test_gray_image_is_corrupted_like_rgb_with_equal_channels(name: str) -> None:
    gray = to_tensor(fashion_images(6))
    rgb = gray.expand(-1, 3, -1, -1).contiguous()
    for severity in (1, 3, 5):
        seeds = _seeds(name, severity, len(gray))
        a = corrupt(gray, name, severity, seeds=seeds)
        b = corrupt(rgb, name, severity, seeds=seeds)
        for c in range(3):
            assert torch.allclose(b[:, c : c + 1], a, atol=1e-9), (name, severity, c)


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_seeded_and_independent_of_the_batch(name: str) -> None:
    x = to_tensor(photo_crops())
    seeds = _seeds(name, 3, len(x))
    batch = corrupt(x, name, 3, seeds=seeds)
    assert torch.equal(batch, corrupt(x, name, 3, seeds=seeds))  # same seeds, same output
    for i in range(len(x)):  # alone, or at another position of another batch: the same corrupted sample
        alone = corrupt(x[i : i + 1], name, 3, seeds=seeds[i : i + 1])
        assert torch.allclose(alone, batch[i : i + 1], atol=1e-12), (name, i)
    flipped = corrupt(x.flip(0), name, 3, seeds=seeds[::-1])
    assert torch.allclose(flipped.flip(0), batch, atol=1e-12)
    other = corrupt(x, name, 3, seeds=_seeds(name, 3, len(x), run=1))
    assert not torch.equal(other, batch)  # another run seed draws other numbers


def test_lengths_in_pixels_follow_the_image_size() -> None:
    assert auto_pixel_scale(224, 224) == 1.0 and auto_pixel_scale(32, 40) == 1.0
    assert auto_pixel_scale(8, 8) == 0.25 and auto_pixel_scale(16, 64) == 0.5
    x = digits(16)
    # at 8x8 the automatic scale shrinks a 32-pixel blur 4x: a milder corruption than the reference's lengths
    auto = (corrupt(x, "defocus_blur", 5) - x).abs().mean()
    full = (corrupt(x, "defocus_blur", 5, pixel_scale=1.0) - x).abs().mean()
    assert auto < full


def test_bad_calls_say_what_to_change() -> None:
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(CorruptionError, match="did you mean 'motion_blur'"):
        corrupt(x, "motion_blurr", 1, seeds=[0, 1])
    with pytest.raises(CorruptionError, match="needs RGB"):
        corrupt(x, "saturate", 1)
    with pytest.raises(CorruptionError, match="1 \\(gray\\) or 3 \\(RGB\\) channels"):
        corrupt(torch.rand(2, 2, 8, 8), "contrast", 1)
    with pytest.raises(CorruptionError, match="one seed per image"):
        corrupt(x, "gaussian_noise", 1)
    with pytest.raises(CorruptionError, match="severity"):
        corrupt(x, "contrast", 6)


def test_frost_without_the_textures(monkeypatch: pytest.MonkeyPatch) -> None:
    from audit.shift import weather

    monkeypatch.setattr(catalog, "frost_texture_dir", lambda: None)
    monkeypatch.setattr(weather, "frost_texture_dir", lambda: None)
    weather._texture_rgb.cache_clear()
    weather.frost_texture.cache_clear()
    try:
        assert "frost" not in catalog.image_defaults(3)
        with pytest.raises(weather.FrostTexturesMissing, match="pip install imagecorruptions"):
            corrupt(torch.rand(1, 3, 32, 32), "frost", 1, seeds=[0])
    finally:
        weather._texture_rgb.cache_clear()
        weather.frost_texture.cache_clear()


# -- the per-sample generators ------------------------------------------------------------------


def test_generator_draws_have_their_distributions() -> None:
    rng = TorchSampleRng(list(range(4)), dtype=torch.float64)
    shape = (50, 40)
    u = rng.uniform(-2.0, 3.0, shape).numpy().ravel()
    assert stats.kstest(u, stats.uniform(loc=-2, scale=5).cdf).pvalue > ALPHA
    z = rng.normal(0.5, 2.0, shape).numpy().ravel()
    assert stats.kstest(z, stats.norm(loc=0.5, scale=2.0).cdf).pvalue > ALPHA
    k = rng.randint(-3, 4, shape).numpy().ravel()
    assert set(np.unique(k)) == set(range(-3, 4))  # numpy's randint: high excluded
    assert stats.chisquare(np.bincount(k + 3)).pvalue > ALPHA
    lam = torch.full((4, 2000), 3.5, dtype=torch.float64)
    counts = rng.poisson(lam).numpy().ravel().astype(int)
    observed = np.bincount(counts, minlength=25)[:25]
    expected = stats.poisson(3.5).pmf(np.arange(25)) * counts.size
    keep = expected > 5
    assert stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > ALPHA
    each = rng.randint_each(0, [1, 2, 10, 1000])
    assert each[0] == 0 and 0 <= each[1] < 2 and 0 <= each[3] < 1000


def test_each_sample_draws_from_its_own_generator() -> None:
    both = TorchSampleRng([11, 22]).normal(0.0, 1.0, (5,))
    assert torch.equal(both[1], TorchSampleRng([22]).normal(0.0, 1.0, (5,))[0])
    assert torch.equal(both[0], TorchSampleRng([11, 99]).normal(0.0, 1.0, (5,))[0])
    assert sample_seeds(0, "s", "fog", 3, [7])[0] == sample_seeds(0, "s", "fog", 3, [1, 7])[1]
    assert len({*sample_seeds(0, "s", "fog", 3, [7]), *sample_seeds(0, "s", "fog", 4, [7]),
                *sample_seeds(0, "s", "snow", 3, [7]), *sample_seeds(1, "s", "fog", 3, [7])}) == 4
