"""Baseline JPEG in torch, computed the way libjpeg(-turbo) does by default (what PIL's ``save(..., 'JPEG')``
and ``Image.open`` run): integer arithmetic throughout, so a batch on any device gives the bytes libjpeg would.

Encoder: RGB -> YCbCr with libjpeg's 16-bit fixed-point tables; 4:2:0 chroma (2x2 means with libjpeg's
alternating 1, 2 rounding bias) after replicating the right and bottom edges to whole 16-pixel MCUs; the
"islow" integer forward DCT (Loeffler-Ligtenberg-Moschytz, 13-bit constants); quantization by the Annex K
tables scaled by the IJG quality formula (baseline: at most 255), rounding half away from zero.
Decoder: dequantization, the "islow" integer inverse DCT with libjpeg's range limiting, "fancy" (triangular)
chroma upsampling, YCbCr -> RGB with libjpeg's tables. Gray images are one luminance component (what an RGB
image with three equal channels decodes to as well).

Only the entropy coding is left out: it is lossless, so it changes no pixel.
"""

from __future__ import annotations

import torch

CONST_BITS = 13
PASS1_BITS = 2
F0298, F0390, F0541, F0765, F0899, F1175 = 2446, 3196, 4433, 6270, 7373, 9633
F1501, F1847, F1961, F2053, F2562, F3072 = 12299, 15137, 16069, 16819, 20995, 25172

LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
)
SCALEBITS = 16
ONE_HALF = 1 << (SCALEBITS - 1)


def quant_table(base: tuple[int, ...], quality: int) -> torch.Tensor:
    """The IJG quality scaling (``jpeg_set_quality`` with force_baseline): an (8, 8) table of divisors."""
    quality = min(max(quality, 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    values = [min(max((b * scale + 50) // 100, 1), 255) for b in base]
    return torch.tensor(values, dtype=torch.int64).reshape(8, 8)


def _descale(x: torch.Tensor, n: int) -> torch.Tensor:
    return (x + (1 << (n - 1))) >> n


def _fdct_1d(d: list[torch.Tensor], final: bool) -> list[torch.Tensor]:
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    shift = CONST_BITS + PASS1_BITS if final else CONST_BITS - PASS1_BITS
    out: list[torch.Tensor] = [d[0]] * 8
    if final:
        out[0], out[4] = _descale(tmp10 + tmp11, PASS1_BITS), _descale(tmp10 - tmp11, PASS1_BITS)
    else:
        out[0], out[4] = (tmp10 + tmp11) << PASS1_BITS, (tmp10 - tmp11) << PASS1_BITS
    z1 = (tmp12 + tmp13) * F0541
    out[2] = _descale(z1 + tmp13 * F0765, shift)
    out[6] = _descale(z1 - tmp12 * F1847, shift)
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * F1175
    tmp4, tmp5, tmp6, tmp7 = tmp4 * F0298, tmp5 * F2053, tmp6 * F3072, tmp7 * F1501
    z1, z2, z3, z4 = z1 * -F0899, z2 * -F2562, z3 * -F1961 + z5, z4 * -F0390 + z5
    out[7] = _descale(tmp4 + z1 + z3, shift)
    out[5] = _descale(tmp5 + z2 + z4, shift)
    out[3] = _descale(tmp6 + z2 + z3, shift)
    out[1] = _descale(tmp7 + z1 + z4, shift)
    return out


def _idct_1d(c: list[torch.Tensor], shift: int) -> list[torch.Tensor]:
    z1 = (c[2] + c[6]) * F0541
    tmp2 = z1 - c[6] * F1847
    tmp3 = z1 + c[2] * F0765
    tmp0 = (c[0] + c[4]) << CONST_BITS
    tmp1 = (c[0] - c[4]) << CONST_BITS
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    t0, t1, t2, t3 = c[7], c[5], c[3], c[1]
    z1, z2, z3, z4 = t0 + t3, t1 + t2, t0 + t2, t1 + t3
    z5 = (z3 + z4) * F1175
    t0, t1, t2, t3 = t0 * F0298, t1 * F2053, t2 * F3072, t3 * F1501
    z1, z2, z3, z4 = z1 * -F0899, z2 * -F2562, z3 * -F1961 + z5, z4 * -F0390 + z5
    t0, t1, t2, t3 = t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4
    return [_descale(tmp10 + t3, shift), _descale(tmp11 + t2, shift), _descale(tmp12 + t1, shift),
            _descale(tmp13 + t0, shift), _descale(tmp13 - t0, shift), _descale(tmp12 - t1, shift),
            _descale(tmp11 - t2, shift), _descale(tmp10 - t3, shift)]


def _rows(block: torch.Tensor, fn: object) -> torch.Tensor:
    """Apply a 1-D transform along the last axis of (..., 8, 8)."""
    parts = fn([block[..., i] for i in range(8)])  # type: ignore[operator]
    return torch.stack(parts, dim=-1)


def _cols(block: torch.Tensor, fn: object) -> torch.Tensor:
    parts = fn([block[..., i, :] for i in range(8)])  # type: ignore[operator]
    return torch.stack(parts, dim=-2)


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    """(N, H, W) with H, W multiples of 8 -> (N, H/8, W/8, 8, 8)."""
    n, h, w = plane.shape
    return plane.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(blocks: torch.Tensor) -> torch.Tensor:
    n, bh, bw = blocks.shape[:3]
    return blocks.permute(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)


def _range_limit(v: torch.Tensor) -> torch.Tensor:
    """libjpeg's post-IDCT table: v + 128 clamped to 0..255 for |v| < 512, wrapping (mod 1024) beyond."""
    m = v & 1023
    return torch.where(m < 128, m + 128, torch.where(m < 512, torch.full_like(m, 255),
                                                      torch.where(m < 896, torch.zeros_like(m), m - 896)))


def code_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Encode and decode one component (N, H, W) of 0..255 integers, H and W multiples of 8."""
    blocks = _blocks(plane - 128)
    coef = _cols(_rows(blocks, lambda d: _fdct_1d(d, False)), lambda d: _fdct_1d(d, True))
    divisor = (table << 3).to(plane.device)
    quant = coef.sign() * ((coef.abs() + (divisor >> 1)) // divisor)
    deq = quant * table.to(plane.device)
    work = _cols(deq, lambda c: _idct_1d(c, CONST_BITS - PASS1_BITS))
    pixels = _rows(work, lambda c: _idct_1d(c, CONST_BITS + PASS1_BITS + 3))
    return _unblocks(_range_limit(pixels))


def _pad_edge(plane: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = plane.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph:
        plane = torch.cat([plane, plane[:, -1:].expand(-1, ph, -1)], dim=1)
    if pw:
        plane = torch.cat([plane, plane[:, :, -1:].expand(-1, -1, pw)], dim=2)
    return plane


def _downsample(plane: torch.Tensor) -> torch.Tensor:
    """libjpeg's h2v2 downsampling of a plane padded to even sides: (sum of 2x2 + bias) >> 2, bias 1, 2, 1, ..."""
    s = plane[:, 0::2, 0::2] + plane[:, 0::2, 1::2] + plane[:, 1::2, 0::2] + plane[:, 1::2, 1::2]
    bias = torch.tensor([1, 2], device=plane.device).repeat((s.shape[2] + 1) // 2)[: s.shape[2]]
    return (s + bias) >> 2


def _upsample(plane: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """libjpeg's h2v2 "fancy" upsampling of the first (rows, cols) samples: triangular weights 3/4, 1/4 in each
    direction, rounding biases 8 and 7, edge samples replicated."""
    c = plane[:, :rows, :cols]
    above = torch.cat([c[:, :1], c[:, :-1]], dim=1)
    below = torch.cat([c[:, 1:], c[:, -1:]], dim=1)
    sums = torch.stack([3 * c + above, 3 * c + below], dim=2).reshape(c.shape[0], 2 * rows, cols)
    left = torch.cat([sums[:, :, :1], sums[:, :, :-1]], dim=2)
    right = torch.cat([sums[:, :, 1:], sums[:, :, -1:]], dim=2)
    even = (3 * sums + left + 8) >> 4
    odd = (3 * sums + right + 7) >> 4
    return torch.stack([even, odd], dim=3).reshape(c.shape[0], 2 * rows, 2 * cols)


def jpeg(samples: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress and decode (N, C, H, W) integer samples 0..255 (C = 1 or 3) at ``quality``."""
    _n, c, h, w = samples.shape
    x = samples.to(torch.int64)
    luma, chroma = quant_table(LUMA_TABLE, quality), quant_table(CHROMA_TABLE, quality)
    if c == 1:
        return code_plane(_pad_edge(x[:, 0], 8), luma)[:, None, :h, :w]
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = (19595 * r + 38470 * g + 7471 * b + ONE_HALF) >> SCALEBITS
    cb = (-11059 * r - 21709 * g + 32768 * b + (128 << SCALEBITS) + ONE_HALF - 1) >> SCALEBITS
    cr = (32768 * r - 27439 * g - 5329 * b + (128 << SCALEBITS) + ONE_HALF - 1) >> SCALEBITS
    y_dec = code_plane(_pad_edge(y, 8), luma)[:, :h, :w]
    rows, cols = (h + 1) // 2, (w + 1) // 2
    planes = []
    for plane in (cb, cr):
        small = _downsample(_pad_edge(plane, 16))
        planes.append(_upsample(code_plane(small, chroma), rows, cols)[:, :h, :w])
    cb_d, cr_d = planes[0] - 128, planes[1] - 128
    red = y_dec + ((91881 * cr_d + ONE_HALF) >> SCALEBITS)
    green = y_dec + ((-22554 * cb_d + ONE_HALF - 46802 * cr_d) >> SCALEBITS)
    blue = y_dec + ((116130 * cb_d + ONE_HALF) >> SCALEBITS)
    return torch.stack([red, green, blue], dim=1).clamp(0, 255)
