"""Hostile files for any image folder: what a scraped or hand-collected dataset may hold.

`write_hostile_files(folder)` writes them into one class folder and says what must become of each:

- `undecodable`: listed as image files (by their name) but not decodable; a run skips each and lists
  it in results.json, `tlbench-data verify` lists it with its reason. Values are a substring of the
  reason (lower case; compare with `reason.lower()`).
- `decodable`: odd but valid images (wrong extension, CMYK, 16 bits, palette with transparency,
  animation, corrupt EXIF, a symbolic link): they must be decoded and used, never skipped.
- `ignored`: not image files by their name (hidden files, a folder named like an image): never listed.

Everything is small and quick to write (about 0.3 s, 100 kB): the over-limit images are 1-bit PNGs of
one colour, written by hand, that declare 100 and 225 megapixels.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

BOMB_SIZE = (15_000, 15_000)  # 225 Mpx: over twice PIL's default limit, PIL refuses it in Image.open
OVER_LIMIT_SIZE = (10_000, 10_000)  # 100 Mpx: over PIL's default limit, under twice it (PIL only warns)


@dataclass
class HostileSet:
    undecodable: dict[str, str] = field(default_factory=dict)  # file name -> reason substring (lower case)
    decodable: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def png_bytes(width: int, height: int, bit_depth: int = 1, colour_type: int = 0, rows: bytes | None = None) -> bytes:
    """A PNG written by hand: `rows` are the raw scanlines (each with its filter byte), zeros if None.
    Zeros compress about 1000:1, so a 15000 x 15000 image of one colour takes 27 kB and 0.2 s."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row_bytes = (width * channels * bit_depth + 7) // 8
    compressor = zlib.compressobj(9)
    if rows is None:
        row = bytes(1 + row_bytes)
        data = b"".join(compressor.compress(row) for _ in range(height))
    else:
        data = compressor.compress(rows)
    data += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _noisy(colour: tuple[int, int, int], size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def write_hostile_files(
    folder: Path, colour: tuple[int, int, int] = (220, 30, 30), size: int = 32, over_limit: bool = True
) -> HostileSet:
    """Write the hostile files into `folder` (a class folder); decodable ones are mostly of `colour`.
    `over_limit=False` leaves out the images over PIL's pixel limit (they make PIL warn)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hostile = HostileSet()
    jpeg = _encoded(_noisy(colour, size, seed=1), "JPEG", quality=90)

    def bad(name: str, reason: str, data: bytes | None = None) -> None:
        if data is not None:
            (folder / name).write_bytes(data)
        hostile.undecodable[name] = reason

    def good(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        hostile.decodable.append(name)

    # --- not decodable: skipped and listed with the reason ---
    bad("empty.jpg", "empty file", b"")
    bad("truncated.jpg", "truncated", jpeg[: len(jpeg) // 2])
    bad("random_bytes.jpg", "not an image", np.random.default_rng(7).bytes(2000))
    bad("text.png", "not an image", b"this is a text file, not a PNG\n" * 20)
    if over_limit:
        bad("bomb.png", "image too large", png_bytes(*BOMB_SIZE))
        bad("over_limit.png", "image too large", png_bytes(*OVER_LIMIT_SIZE))
        # a valid JPEG whose frame header declares 65000 x 65000 pixels
        start = jpeg.index(b"\xff\xc0") + 5  # SOF0 marker, length (2), precision (1), then height, width
        bad("huge_header.jpg", "image too large", jpeg[:start] + struct.pack(">HH", 65000, 65000) + jpeg[start + 4 :])
    # a PNG whose compressed text chunk inflates to 8 MB (PIL's limit for one is 1 MB)
    text_bomb = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(8 << 20), 9))
    small = png_bytes(4, 4)
    bad("text_chunk_bomb.png", "decompressed data too large", small[:33] + text_bomb + small[33:])
    os.symlink(folder / "missing_target.jpg", folder / "broken_link.jpg")
    bad("broken_link.jpg", "no such file")
    if hasattr(os, "mkfifo"):  # opening a FIFO for reading blocks until a writer comes: never opened
        os.mkfifo(folder / "fifo.jpg")
        bad("fifo.jpg", "not a regular file")
    if os.geteuid() != 0:  # root reads a file whatever its mode: then it is not hostile, not written
        (folder / "unreadable.jpg").write_bytes(jpeg)
        (folder / "unreadable.jpg").chmod(0)
        bad("unreadable.jpg", "permission denied")

    # --- decodable: odd, but must be used ---
    good("png_named.jpg", _encoded(_noisy(colour, size, seed=2), "PNG"))
    good("cmyk.jpg", _encoded(_noisy(colour, size, seed=3).convert("CMYK"), "JPEG"))
    grey = int(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2])
    good("gray16.png", _encoded(Image.fromarray(np.full((size, size), grey * 257, np.uint16)), "PNG"))
    rgb16 = b"".join(b"\0" + struct.pack(">HHH", *(c * 257 for c in colour)) * size for _ in range(size))
    good("rgb16.png", png_bytes(size, size, bit_depth=16, colour_type=2, rows=rgb16))
    palette = Image.new("P", (size, size), 1)
    palette.putpalette([0, 0, 0, *colour] + [0] * (254 * 3))
    palette.paste(0, (0, 0, size // 4, size // 4))  # a transparent corner: composited on white
    good("palette_transparent.png", _encoded(palette, "PNG", transparency=0))
    frames = [_noisy(colour, size, seed=4), _noisy((0, 0, 0), size, seed=5)]
    good("animated.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0))
    # EXIF whose entries point far past the end of the file (PIL warns and skips them when asked)
    entries = b"".join(struct.pack(">HHII", tag, 4, 0x0FFFFFFF, 0xFFFFFFF0) for tag in (0x0112, 0x8769, 0x8825))
    exif = b"Exif\0\0" + b"MM\0*" + struct.pack(">IH", 8, 3) + entries + bytes(4)
    good("bad_exif.jpg", jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:])
    good("UPPER_CASE.JPEG", _encoded(_noisy(colour, size, seed=6), "JPEG"))
    os.symlink("png_named.jpg", folder / "link_to_png.png")
    hostile.decodable.append("link_to_png.png")

    # --- ignored: not image files by their name ---
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(100))
    (folder / "._png_named.jpg").write_bytes(b"\0\5\26\7" + bytes(80))  # an AppleDouble resource fork
    (folder / "folder.jpg").mkdir()  # a folder named like an image (empty: nothing in it is listed)
    (folder / "notes.txt").write_text("not an image\n")
    hostile.ignored += [".DS_Store", "._png_named.jpg", "folder.jpg", "notes.txt"]
    return hostile
