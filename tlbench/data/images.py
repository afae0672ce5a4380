"""Robust image decoding: the format comes from the file's content, every mode ends up RGB.

A file that cannot be decoded raises ImageDecodeError with the reason (empty, not an image,
truncated, unreadable, a broken symbolic link, not a regular file, too large, ...); the data
loaders turn that into a skipped image, listed in results.json, and `tlbench-data verify` lists it.
No other exception escapes `load_rgb`: a hostile file must not end a run.

Size limit. An image of more than PIL's `Image.MAX_IMAGE_PIXELS` pixels (PIL's default is
89,478,485, e.g. 9459 x 9459) is refused before any pixel is decoded: a "decompression bomb" (a
small file that declares a huge image) would otherwise take gigabytes of memory in every data
loader worker. PIL itself only warns up to twice its limit and raises above it; tlbench refuses
everything above the limit, with the same message either way. Datasets with larger images (whole
slide or satellite images) raise it with the environment variable

    TLBENCH_MAX_IMAGE_PIXELS=250000000   # pixels; 0 or "none": no limit

read when this module is imported (data loader workers inherit it). It sets PIL's
`Image.MAX_IMAGE_PIXELS`, so the limit is the same in tlbench and in PIL.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tlbench.errors import ConfigError, ImageDecodeError

# Common image extensions; the decoder never trusts them, they only select candidate files.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

PIXEL_LIMIT_ENV = "TLBENCH_MAX_IMAGE_PIXELS"


def is_image_file(name: str) -> bool:
    # Hidden files are never images: .DS_Store, and macOS's AppleDouble "._photo.jpg" resource forks.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def apply_pixel_limit_from_env() -> int | None:
    """Set PIL's Image.MAX_IMAGE_PIXELS from $TLBENCH_MAX_IMAGE_PIXELS where it is set; returns the
    limit in force (None: no limit)."""
    value = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if value:
        if value.lower() in ("0", "none"):
            Image.MAX_IMAGE_PIXELS = None
        else:
            try:
                limit = int(value.replace("_", ""))
            except ValueError:
                limit = -1
            if limit < 0:
                raise ConfigError(
                    f"{PIXEL_LIMIT_ENV}={value!r}: expected a number of pixels (e.g. 250000000), "
                    "or 0 / none for no limit"
                )
            Image.MAX_IMAGE_PIXELS = limit
    return Image.MAX_IMAGE_PIXELS


apply_pixel_limit_from_env()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, CMYK, RGBA, I;16, ...) to RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16"):
        image = image.point(lambda v: v * (255.0 / 65535.0), "F").convert("L")
    elif image.mode in ("I", "F"):
        # 32-bit integer or float grayscale: scale by the range the values use ([0, 1], 8 or 16 bits).
        high = image.getextrema()[1]
        scale = 255.0 if high <= 1.0 else 1.0 if high <= 255 else 255.0 / 65535.0
        image = image.convert("F").point(lambda v: v * scale).convert("L")
    return image.convert("RGB")


def _too_large(size: str, limit: int) -> str:
    return (
        f"image too large: {size}, over the limit of {limit:,} pixels (PIL's Image.MAX_IMAGE_PIXELS, a guard "
        f"against decompression bombs; to decode such images set {PIXEL_LIMIT_ENV}=<pixels>)"
    )


def _check_regular_file(path: str | Path) -> None:
    """A missing file, a broken symbolic link, a folder, a FIFO (which would block the reader forever)
    or a device is refused before PIL opens it."""
    try:
        info = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        link = " (a symbolic link to a missing file)" if os.path.islink(path) else ""
        raise ImageDecodeError(f"{path}: no such file{link}") from None
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise ImageDecodeError(f"{path}: empty file (0 bytes)")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode the first frame of an image file as RGB, or raise ImageDecodeError naming the file and
    the reason; images over Image.MAX_IMAGE_PIXELS are refused (see the module docstring)."""
    _check_regular_file(path)
    try:
        with Image.open(path) as image:  # PIL identifies the format from the bytes
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                size = f"{image.width}x{image.height} = {image.width * image.height:,} pixels"
                raise ImageDecodeError(f"{path}: {_too_large(size, limit)}")
            image.seek(0)
            image.load()
            return to_rgb(image).copy()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:  # over twice the limit: PIL refuses it in Image.open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else str(exc)
        raise ImageDecodeError(f"{path}: {_too_large(size, Image.MAX_IMAGE_PIXELS or 0)}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{path}: cannot decode image (not an image, or a format PIL cannot read)") from exc
    except OSError as exc:
        if exc.errno is not None:  # the file system's error (permission denied, I/O error), not the decoder's
            raise ImageDecodeError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from exc
    except (SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from exc
    except MemoryError as exc:
        raise ImageDecodeError(f"{path}: cannot decode image (out of memory)") from exc
    except Exception as exc:  # a hostile file can make a decoder raise anything (struct.error, IndexError, ...)
        raise ImageDecodeError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
