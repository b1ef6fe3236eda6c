"""JPEG compression (Dziugaite et al. 2016; Guo et al. 2018): encode and decode each image at a quality.

Computed outside torch (Pillow), so the defended model has no gradient through it: a naive attack sees zero
gradient; the adaptive one uses BPDA with the identity (JPEG at high quality is close to it).
"""

from __future__ import annotations

import io
from typing import ClassVar

import numpy as np
import torch

from attacks.defenses.base import Defense


class JPEG(Defense):
    """JPEG compression of each image at the given quality (images only, 1 or 3 channels)."""

    name = "jpeg"
    differentiable = False
    modalities: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, *, quality: int = 75) -> None:
        super().__init__()
        if not 1 <= quality <= 95:
            raise ValueError(f"quality must be between 1 and 95, got {quality}")
        self.quality = quality

    def requirements(self) -> tuple[str, ...]:
        return ("bounded",)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"jpeg needs images with 1 or 3 channels, got shape {list(x.shape)}")
        span = self.upper - self.lower
        arr = ((x.detach().cpu().numpy() - self.lower) / span).clip(0, 1)
        out = np.empty_like(arr)
        for i, img in enumerate(arr):
            pixels = np.round(img.transpose(1, 2, 0) * 255).astype(np.uint8)
            mode = "L" if pixels.shape[2] == 1 else "RGB"
            buffer = io.BytesIO()
            Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode=mode).save(
                buffer, format="JPEG", quality=self.quality)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode), dtype=np.float32) / 255
            out[i] = decoded.reshape(pixels.shape).transpose(2, 0, 1)
        return torch.as_tensor(out * span + self.lower, dtype=x.dtype, device=x.device)

    def settings(self) -> dict[str, object]:
        return {**super().settings(), "quality": self.quality}
