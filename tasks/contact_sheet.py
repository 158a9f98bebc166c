"""A contact sheet: a grid of face crops with captions, for a person to look over a batch."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from avatarflow.storage import atomic_path
from tasks.images import save_image


def make_contact_sheet(
    items: list[tuple[str, Path | None, str]], out_path: Path, *, tile: int = 256, columns: int = 4
) -> None:
    """A grid of crops with captions (name, then status or warnings) for a person to look over.

    An item whose path is None (a refused image) is drawn as a grey tile showing the reason.
    """
    out_path = Path(out_path)
    caption_h = 96
    columns = max(1, min(columns, len(items) or 1))
    rows = max(1, math.ceil(len(items) / columns))
    gap = 8
    sheet = Image.new(
        "RGB",
        (columns * (tile + gap) + gap, rows * (tile + caption_h + gap) + gap),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    font = _font(13)
    bold = _font(14)
    chars = max(10, int(tile / 7.2))
    for i, (name, path, caption) in enumerate(items):
        x = gap + (i % columns) * (tile + gap)
        y = gap + (i // columns) * (tile + caption_h + gap)
        thumb = _thumb(path, tile)
        if thumb is None:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=(150, 150, 150))
            lines = textwrap.wrap(caption, width=chars)[:14]
            draw.multiline_text(
                (x + 8, y + 8), "\n".join(lines), fill=(255, 255, 255), font=font, spacing=3
            )
            text = "REFUSED"
        else:
            sheet.paste(thumb, (x, y))
            text = caption
        draw.text((x, y + tile + 4), textwrap.shorten(name, width=chars), fill=(0, 0, 0), font=bold)
        lines = textwrap.wrap(text, width=chars)
        if len(lines) > 5:
            lines = lines[:4] + [lines[4][: chars - 1] + "…"]
        draw.multiline_text(
            (x, y + tile + 22), "\n".join(lines), fill=(70, 70, 70), font=font, spacing=2
        )
    with atomic_path(out_path) as tmp:
        save_image(sheet, tmp, out_path.suffix)


def _thumb(path: Path | None, tile: int) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS)
    except (OSError, ValueError):
        return None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the small bitmap font
        return ImageFont.load_default()
