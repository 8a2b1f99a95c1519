"""Decoding one image (and its masks) from disk into uint8 arrays, or saying why not.

Every failure is a :class:`BadFile` whose message names the file and the fix,
so the first scan of a dataset can collect them and report them in one line.
Images are converted to the channels the model takes (grayscale -> 3 channels
when it wants 3, RGBA drops alpha, 16-bit divided by 257) and resized to the
configured square side (:func:`decoding_steps` writes the steps out, for
``export.json``); masks are resized with nearest neighbour so class values
survive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lossbench.contract import IGNORE_INDEX

#: file endings read as images, by every source and by ``lossbench predict``
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"})
#: an image whose long side is more than this many times its short side (1 x 5000) is refused, not squashed
MAX_ASPECT_RATIO = 100


class BadFile(Exception):
    """One unreadable or inconsistent file; the message names it and says what to do."""


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image extension (``.DS_Store``, ``Thumbs.db`` and hidden files are not)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _open(path: Path, what: str) -> Image.Image:
    try:
        size = path.stat().st_size
    except OSError:
        raise BadFile(f"{path}: {what} file does not exist; restore it or remove its entry") from None
    if size == 0:
        raise BadFile(f"{path}: {what} file is empty (0 bytes); re-copy it or delete it")
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise BadFile(f"{path}: {what} too large to decode safely ({exc}); shrink it or delete it") from None
    except UnidentifiedImageError:
        raise BadFile(f"{path}: not an image (unreadable as any image format despite its name); "
                      f"replace it with a real {what} or delete it") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadFile(f"{path}: corrupt or truncated {what} ({exc}); re-copy it or delete it") from None


def _load(im: Image.Image, path: Path, what: str) -> None:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadFile(f"{path}: corrupt or truncated {what} ({exc}); re-copy it or delete it") from None


#: Pillow modes of gray images with more than 8 bits of integers (16-bit PNG and TIFF; a 16-bit PGM opens as I)
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: their values are divided by this (65535 -> 255), whatever an image's own range, so a dark image stays dark
DEEP_DIVISOR = 257
#: Pillow mode each number of channels is decoded to
CHANNEL_MODES = {1: "L", 3: "RGB"}


def _to_8_bits(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _to_channels(im: Image.Image, channels: int, path: Path | str = "image") -> Image.Image:
    """Convert any PIL mode to ``L`` (1 channel) or ``RGB`` (3 channels), as :func:`decoding_steps` describes;
    a float image with NaN or infinite pixels is a :class:`BadFile` (they would silently become 0)."""
    if im.mode in DEEP_MODES:
        im = _to_8_bits(np.asarray(im).astype(np.float64) / DEEP_DIVISOR)
    elif im.mode == "F":  # floats say nothing of their range: 0..255 unless a value is above it
        arr = np.asarray(im).astype(np.float64)
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise BadFile(f"{path}: float image with {bad} NaN or infinite pixel{'s' * (bad > 1)}; replace them "
                          "(e.g. with 0) and save it again, or delete it")
        im = _to_8_bits(arr / DEEP_DIVISOR if arr.max(initial=0) > 255 else arr)
    if im.mode == "P":
        im = im.convert("RGBA")
    target = CHANNEL_MODES[channels]
    return im if im.mode == target else im.convert(target)


def decoding_steps(channels: int, size: int) -> list[dict]:
    """How :func:`read_image` turns an image file into a uint8 C x size x size array, step by step.

    For ``export.json``: what a user of an exported network repeats before it.
    Each step names what it applies to and the Pillow call that does it.
    """
    mode = CHANNEL_MODES[channels]
    return [
        {"step": "decode", "library": "Pillow", "exif_orientation": "ignored",
         "how": "PIL.Image.open; the pixels as stored (an EXIF orientation tag is not applied)"},
        {"step": "jpeg_draft", "applies_to": "JPEG files", "mode": mode, "size": [size, size],
         "how": f"im.draft('{mode}', ({size}, {size})) before loading: libjpeg decodes at 1/s scale (sides rounded "
                f"up), s the largest of 8, 4, 2, 1 not above min(width // {size}, height // {size})"},
        {"step": "high_bit_depth", "modes": list(DEEP_MODES), "divide_by": DEEP_DIVISOR,
         "how": f"16-bit (and 32-bit integer) gray: round(value / {DEEP_DIVISOR}) clipped to 0..255, as 8-bit "
                f"gray, whatever the image's own range; float (mode F) images: values as 0..255 unless one exceeds "
                f"255, then / {DEEP_DIVISOR}; 16-bit colour PNGs: Pillow itself keeps each value's high byte"},
        {"step": "palette", "modes": ["P"], "convert_to": "RGBA", "how": "im.convert('RGBA')"},
        {"step": "channels", "mode": mode, "channels": channels,
         "how": f"im.convert('{mode}'): alpha dropped, not composited"
                + (", gray repeated in R, G and B" if channels == 3 else
                   ", colour to luma L = R * 299/1000 + G * 587/1000 + B * 114/1000")},
        {"step": "resize", "size": [size, size], "interpolation": "bilinear",
         "how": f"im.resize(({size}, {size}), Image.BILINEAR) (Pillow's, antialiased when it shrinks) unless the "
                f"image is {size} x {size} already; the aspect ratio is not kept, nothing is cropped"},
    ]


def read_image(path: Path, channels: int, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 C x size x size array, original (width, height))`` of an image file (size None: not resized)."""
    im = _open(path, "image")
    with im:
        original = im.size  # before a JPEG draft shrinks it
        return image_array(im, channels, size, path), original


def image_array(im: Image.Image, channels: int, size: int | None, path: Path | str = "image") -> np.ndarray:
    """An opened image as a uint8 C x size x size array, decoded as every source decodes its files.

    JPEGs are drafted at the target size, then the image is converted to
    ``channels`` and resized (bilinear) to size x size; ``size`` None keeps
    its own size. ``path`` names it in the :class:`BadFile` raised when it
    cannot be decoded.
    """
    original = im.size
    if max(original) > MAX_ASPECT_RATIO * min(original):
        squashed = f"squashed to {size}x{size} " if size is not None else ""
        raise BadFile(f"{path}: absurd image size {original[0]}x{original[1]} (one side over "
                      f"{MAX_ASPECT_RATIO} times the other; {squashed}nothing of it would "
                      "remain); crop it or delete it")
    if size is not None and im.format == "JPEG":
        im.draft("RGB" if channels == 3 else "L", (size, size))
    _load(im, path, "image")
    im = _to_channels(im, channels, path)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.array(arr, order="C")  # a writable copy: torch.from_numpy warns on Pillow's read-only buffers


def read_mask_values(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Raw values (int64 H x W) and (width, height) of a mask: index, palette, 16-bit or gray-valued RGB."""
    im = _open(path, "mask")
    with im:
        _load(im, path, "mask")
        size = im.size
        if im.mode == "F":
            raise BadFile(f"{path}: floating-point mask; save masks as 8- or 16-bit integer PNGs")
        arr = np.asarray(im)
    if arr.ndim == 3:
        colour = arr[..., : min(3, arr.shape[2])]
        if not (colour == colour[..., :1]).all():
            raise BadFile(f"{path}: RGB mask with coloured pixels; save it as a single-channel index PNG "
                          f"(pixel value = class) or as gray values")
        arr = colour[..., 0]
    return arr.astype(np.int64), size


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 H x W mask to size x size."""
    if mask.shape == (size, size):
        return mask
    return np.array(Image.fromarray(mask, "L").resize((size, size), Image.NEAREST), dtype=np.uint8)


@dataclass(frozen=True)
class MaskSpec:
    """How masks become targets.

    ``kind``: ``index`` (one mask per image, value -> class through
    ``value_map`` or as is; 255 ignores), ``nested_index`` (one binary mask
    per class, merged into an index mask with background 0 and class k + 1
    for the k-th mask folder) or ``multilabel`` (one binary channel per class).
    ``num_classes`` bounds index values when known.
    """

    kind: str
    value_map: tuple[tuple[int, int], ...] | None = None
    num_classes: int | None = None

    def key(self) -> list:
        return [self.kind, self.value_map, self.num_classes]


#: distinct non-zero values of a binary mask remembered by the first scan (more than this: the mask is not binary)
MAX_FOREGROUND_VALUES = 8


def read_target_mask(
    mask_paths: tuple[Path | None, ...], spec: MaskSpec, image_path: Path, image_size: tuple[int, int], size: int
) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    """The uint8 target mask (size x size, or C x size x size for multilabel) of one image, and the distinct
    non-zero values of each binary mask layer (the first :data:`MAX_FOREGROUND_VALUES`; none for index masks),
    from which :func:`stray_mask_values` finds values that mean nothing."""
    layers = []
    for k, path in enumerate(mask_paths):
        if path is None:
            where = f" in mask folder {k}" if len(mask_paths) > 1 else ""
            raise BadFile(f"{image_path}: no mask{where} for this image; add the mask or remove the image")
        values, msize = read_mask_values(path)
        if msize != image_size:
            raise BadFile(f"{path}: mask is {msize[0]}x{msize[1]} but its image {image_path.name} is "
                          f"{image_size[0]}x{image_size[1]}; save the mask at the image's size")
        layers.append((path, values))
    if spec.kind == "index":
        path, values = layers[0]
        if spec.value_map is not None:
            mapping = dict(spec.value_map)
            unknown = sorted(set(np.unique(values).tolist()) - set(mapping))
            if unknown:
                raise BadFile(f"{path}: mask values {unknown[:5]} are not in data.seg.value_map "
                              f"(keys {sorted(mapping)}); add them to the map")
            lut_keys = np.array(sorted(mapping), dtype=np.int64)
            lut_vals = np.array([mapping[k] for k in lut_keys], dtype=np.uint8)
            values = lut_vals[np.searchsorted(lut_keys, values)]
        else:
            bound = spec.num_classes or IGNORE_INDEX
            bad = np.unique(values[(values != IGNORE_INDEX) & ((values < 0) | (values >= bound))])
            if bad.size:
                hint = (f"classes are 0..{spec.num_classes - 1}" if spec.num_classes else "values must be below 255")
                raise BadFile(f"{path}: mask values {bad[:5].tolist()} outside the classes ({hint}, 255 = ignore); "
                              f"map them with data.seg.value_map, e.g. {{0: 0, {int(bad[-1])}: 1}}")
        return resize_mask(values.astype(np.uint8), size), ()
    binary = [resize_mask((values > 0).astype(np.uint8), size) for _, values in layers]
    foreground = tuple(tuple(int(v) for v in np.unique(values[values > 0])[:MAX_FOREGROUND_VALUES])
                       for _, values in layers)
    if spec.kind == "multilabel":
        return np.stack(binary), foreground
    out = np.zeros((size, size), dtype=np.uint8)
    for k, layer in enumerate(binary):
        out[layer > 0] = k + 1
    return out, foreground


def stray_mask_values(foreground: Sequence[Sequence[Sequence[int]] | None],
                      masks: Sequence[Sequence[Path | None]]) -> list[tuple[int, str]]:
    """``(item, message)`` for each binary mask holding a value that means nothing in its folder.

    A binary mask folder marks outside with 0 and inside with its foreground
    values: those some mask of the folder uses as its only non-zero value (255,
    or 1, or both when masks come from two tools); when no mask has a single
    one, the value most masks hold. Any other value (77 among 0 / 255 masks,
    the blended edges of an anti-aliased or JPEG mask) is neither, and its
    mask is a bad file. ``foreground[i][k]`` are the non-zero values of item
    i's k-th mask (None: the item is bad already), ``masks[i][k]`` its file;
    the k-th masks of all items share one folder.
    """
    bad: dict[int, str] = {}
    for k in range(len(masks[0]) if masks else 0):
        held = [(i, values[k]) for i, values in enumerate(foreground) if values is not None and values[k]]
        used = {vals[0] for _, vals in held if len(vals) == 1}
        if not used and held:
            votes = Counter(v for _, vals in held for v in vals)
            used = {votes.most_common(1)[0][0]}
        for i, vals in held:
            stray = [v for v in vals if v not in used]
            if stray and i not in bad:
                inside = ", ".join(map(str, sorted(used)))
                bad[i] = (f"{masks[i][k]}: value{'s' * (len(stray) > 1)} {', '.join(map(str, stray))} in a binary "
                          f"mask, but the masks of {masks[i][k].parent} mark inside with {inside} and outside with 0; "
                          "save it with those values only (no anti-aliasing, PNG not JPEG)")
    return sorted(bad.items())
