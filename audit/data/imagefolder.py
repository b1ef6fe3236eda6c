"""Image folders: a class-per-folder tree of image files (``data.source: imagefolder``), decoded by PIL in a
torch DataLoader. PIL and torch are imported when images are loaded, not before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from audit.config import DataConfig
from audit.data.base import AuditData, stratified_subset
from audit.errors import ConfigError, DataError


def list_image_folder(root: Path, extensions: list[str],
                      class_names: list[str] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, class names) of a class-per-folder tree: ``root/<class>/<image>``, classes sorted by name
    (torchvision's ImageFolder order) or in ``data.class_names`` order. Images are not opened."""
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} holds no class folders; imagefolder expects root/<class name>/<image files>")
    names = [p.name for p in folders]
    if class_names is not None:
        unknown = [n for n in names if n not in class_names]
        if unknown:
            raise ConfigError("data.class_names", f"folders {unknown[:5]} in {root} are not among class_names "
                              f"{class_names}; list every class folder (in the model's output order)")
        order = {name: i for i, name in enumerate(class_names)}
    else:
        order = {name: i for i, name in enumerate(names)}
    files: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        files += found
        labels += [order[folder.name]] * len(found)
    if not files:
        raise DataError(f"no image files ({', '.join(sorted(suffixes))}) under the class folders of {root}; set "
                        "data.extensions to the suffixes your images have")
    return files, np.asarray(labels, np.int64), list(class_names) if class_names is not None else names


def _pair(value: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


class ImageTransform:
    """PIL image -> float32 array (C, H, W) in [0, 1]: the color mode, then resize (bilinear; an int resizes
    the shorter side and keeps the aspect ratio, as torchvision's Resize does), then a center crop."""

    def __init__(self, *, mode: str, resize: int | tuple[int, int] | None,
                 crop: int | tuple[int, int] | None) -> None:
        self.mode = mode
        self.resize = resize
        self.crop = _pair(crop)

    def size_after_resize(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step."""
        if self.resize is None:
            return width, height
        if isinstance(self.resize, int):
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(self.resize * long / short)
            return (self.resize, new_long) if width <= height else (new_long, self.resize)
        return int(self.resize[1]), int(self.resize[0])

    def __call__(self, image: Any) -> np.ndarray:
        from PIL import Image

        image = image.convert(self.mode)
        size = self.size_after_resize(*image.size)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        if self.crop is not None:
            crop_h, crop_w = self.crop
            width, height = image.size
            if crop_h > height or crop_w > width:
                raise DataError(f"data.crop {list(self.crop)} is larger than the image after resizing "
                                f"({height} x {width}); lower data.crop or raise data.resize")
            left, top = round((width - crop_w) / 2.0), round((height - crop_h) / 2.0)
            image = image.crop((left, top, left + crop_w, top + crop_h))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


class _ImageFiles:
    """A map-style dataset over image files (what a torch DataLoader pulls from)."""

    def __init__(self, files: list[Path], transform: ImageTransform) -> None:
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.files[i]) as image:
                return self.transform(image)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"cannot read image {self.files[i]}: {err}; remove the file or fix it") from err


def _color_mode(files: list[Path], color: str) -> str:
    """'L' when every image is grey-level (L, 1, I, I;16, F or LA), else 'RGB'; reads headers only."""
    if color != "auto":
        return color
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as image:
                if image.mode not in ("L", "1", "I", "I;16", "F", "LA"):
                    return "RGB"
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err}; remove the file or fix it") from err
    return "L"


def load_image_folder(config: DataConfig, *, seed: int, limit: int | None) -> AuditData:
    """A class-per-folder tree of images. The stratified ``limit`` picks files before any image is decoded; the
    picked images are decoded in batches by a torch DataLoader (``data.workers`` processes)."""
    from torch.utils.data import DataLoader

    assert config.path is not None
    root = Path(config.path)
    files, labels, class_names = list_image_folder(root, config.extensions, config.class_names)
    if limit is not None and limit < len(files):
        picked = stratified_subset(labels, limit, seed)
        files, labels = [files[i] for i in picked], labels[picked]
    mode = _color_mode(files, config.color)
    transform = ImageTransform(mode=mode, resize=config.resize, crop=config.crop)
    dataset: Any = _ImageFiles(files, transform)  # map-style: __len__ and __getitem__, as DataLoader wants
    loader: DataLoader[np.ndarray] = DataLoader(dataset, batch_size=64, num_workers=config.workers,
                        collate_fn=_stack_same_size)
    try:
        batches = [batch for batch in loader]
    except DataError:
        raise
    except RuntimeError as err:  # a worker re-raises the DataError as a RuntimeError
        raise DataError(str(err)) from err
    _same_size([batch[0] for batch in batches])
    x = np.concatenate(batches)
    channels = x.shape[1]
    return AuditData(
        name=root.name,
        x=x,
        y=labels,
        class_names=class_names,
        modality="image",
        feature_names=None,
        lower=np.zeros((channels, *x.shape[2:]), np.float32),
        upper=np.ones((channels, *x.shape[2:]), np.float32),
    )


def _stack_same_size(arrays: list[np.ndarray]) -> np.ndarray:
    _same_size(arrays)
    return np.stack(arrays)


def _same_size(arrays: list[np.ndarray]) -> None:
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise DataError(f"images of different sizes {[list(s) for s in shapes[:3]]}; set data.resize and/or "
                        "data.crop so every image ends up the same size (e.g. resize: 256, crop: 224)")
