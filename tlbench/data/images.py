"""Robust image decoding: the format comes from the file's content, every mode ends up RGB."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tlbench.errors import ImageDecodeError

# Common image extensions; the decoder never trusts them, they only select candidate files.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


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


def load_rgb(path: str | Path) -> Image.Image:
    """Decode the first frame of an image file as RGB, or raise ImageDecodeError naming the file."""
    try:
        with Image.open(path) as image:  # PIL identifies the format from the bytes
            image.seek(0)
            image.load()
            return to_rgb(image).copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from exc
