"""Image checks (API side, Pillow only) and decoding + preprocessing (worker side).

The API runs :func:`inspect` on every upload: it reads the header (format, size) and the
file's structure without decoding pixels, so it stays cheap and never needs numpy or torch.
The worker runs :func:`load_rgb`, which decodes (JPEG at a reduced scale when the image is
large), resizes the short side and centre-crops to the model's input.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from toolkit.errors import UsageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
"""Pillow decoders untrusted uploads may reach; others are never tried."""

CONTENT_TYPES = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
}


class ImageRejected(UsageError):
    """An upload that is not an acceptable image; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def _open(data: bytes, max_pixels: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    # tk checks the pixel count itself, from the header, before anything is decoded (below),
    # so that the message can name the size; Pillow's own guard would only say "too many".
    Image.MAX_IMAGE_PIXELS = None

    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected(
            f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)})", 415
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected(f"unreadable image header: {exc}", 400) from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageRejected(
            f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(refused as a possible decompression bomb)",
            413,
        )
    if w < 1 or h < 1:
        raise ImageRejected(f"image has no pixels ({w}x{h})", 400)
    return img


def _jpeg_complete(data: bytes) -> bool:
    """True when the JPEG's entropy-coded data ends with an EOI marker after its first SOS."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            return data.rfind(b"\xff\xd9", i) > i
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def inspect(data: bytes, max_pixels: int, max_bytes: int | None = None) -> ImageInfo:
    """Check an upload without decoding its pixels; raises ImageRejected naming the problem."""
    if not data:
        raise ImageRejected("empty image", 400)
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageRejected(f"image is {len(data):,} bytes, over the limit of {max_bytes:,}", 413)
    img = _open(data, max_pixels)
    fmt = str(img.format)
    if fmt == "JPEG" and not _jpeg_complete(data):
        raise ImageRejected("truncated JPEG: the data ends before the image does", 400)
    if fmt == "PNG":
        try:
            img.verify()  # chunk structure and CRCs, no decompression
        except Exception as exc:
            raise ImageRejected(f"corrupt or truncated PNG: {exc}", 400) from None
    return ImageInfo(fmt, img.size[0], img.size[1])


def load_rgb(data: bytes, size: int, resize: int, max_pixels: int) -> Any:
    """Decode, resize the short side to ``resize``, centre-crop ``size`` x ``size``.

    Returns a uint8 numpy array (H, W, 3). Raises ImageRejected for anything undecodable.
    """
    import numpy as np
    from PIL import Image

    img = _open(data, max_pixels)
    try:
        if img.format == "JPEG":
            img.draft("RGB", (resize, resize))  # DCT scaling: decode big JPEGs at 1/2..1/8
        img = img.convert("RGB")
        w, h = img.size
        scale = resize / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8)
    except ImageRejected:
        raise
    except Exception as exc:
        text = str(exc) or type(exc).__name__
        raise ImageRejected(f"cannot decode image: {text}", 400) from None
