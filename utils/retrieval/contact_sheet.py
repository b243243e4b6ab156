"""Contact sheets: one query and its top results as one PNG, each result framed by whether it shares a label with
the query (predict.py and infer.py write one per query; the search page uses the same colours).
"""
import os
import sys

from utils.datasets.image_list import load_rgb
from utils.runtime.console import log_to_stderr

THUMB_SIZE = 160
CAPTION_HEIGHT = 28
SHEET_COLUMNS = 6
LEGEND_HEIGHT = 26
BORDER_WIDTH = 4
# contact sheet and search page: the query, results sharing a label with it, results sharing none
COLOURS = {"query": (40, 90, 220), "right": (30, 160, 60), "wrong": (220, 40, 40)}


def _thumbnail(path, caption, border=None):
    from PIL import Image, ImageDraw
    cell = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE + CAPTION_HEIGHT), "white")
    image = load_rgb(path)
    scale = (THUMB_SIZE - 12) / max(image.size)  # small images (the 64 px toy set) are enlarged too
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    cell.paste(image, ((THUMB_SIZE - image.width) // 2, (THUMB_SIZE - image.height) // 2))
    draw = ImageDraw.Draw(cell)
    if border is not None:
        draw.rectangle([1, 1, THUMB_SIZE - 2, THUMB_SIZE - 2], outline=border, width=BORDER_WIDTH)
    draw.text((6, THUMB_SIZE + 6), caption, fill="black")
    return cell


def match_colour(entry, item):
    """Border of a result: shares a label with the query (right), shares none (wrong), or None when the query's
    labels are unknown (an image outside the dataset lists)."""
    if entry.get("query_labels") is None or item.get("shared_labels") is None:
        return None
    return COLOURS["right"] if item["shared_labels"] else COLOURS["wrong"]


def _legend(entry, min_width):
    """The legend line, at least min_width wide (wider when its text needs it)."""
    from PIL import Image, ImageDraw
    keys = _legend_keys(entry)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(min_width, 6 + sum(20 + int(measure.textlength(text)) + 18 for _, text in keys))
    strip = Image.new("RGB", (width, LEGEND_HEIGHT), "white")
    draw = ImageDraw.Draw(strip)
    x = 6
    for colour, text in keys:
        draw.rectangle([x, 6, x + 14, LEGEND_HEIGHT - 8], outline=COLOURS[colour], width=BORDER_WIDTH)
        draw.text((x + 20, 7), text, fill="black")
        x += 20 + int(draw.textlength(text)) + 18
    return strip


def _legend_keys(entry):
    if entry.get("query_labels") is None:
        keys = [("query", "query (labels unknown: not in the dataset lists, so results are not marked)")]
    else:
        # PIL's default bitmap font draws "shares a" as "sharesa": wording without a one-letter word
        keys = [("query", "query"), ("right", "label in common with the query"),
                ("wrong", "no label in common with the query")]
    return keys


def contact_sheet(entry):
    """A legend line, then the query (blue frame) and its matches, each framed green when it shares a label with
    the query and red when it shares none (unframed when the query's labels are unknown), captioned with rank and
    Hamming distance."""
    from PIL import Image
    cells = [_thumbnail(entry["query"], "query", border=COLOURS["query"])]
    cells += [_thumbnail(item["path"], f"#{item['rank']}  distance {item['distance']}", match_colour(entry, item))
              for item in entry["results"]]
    columns = min(SHEET_COLUMNS, len(cells))
    rows = -(-len(cells) // columns)
    legend = _legend(entry, columns * THUMB_SIZE)
    sheet = Image.new("RGB", (legend.width, LEGEND_HEIGHT + rows * (THUMB_SIZE + CAPTION_HEIGHT)), (235, 235, 235))
    sheet.paste(legend, (0, 0))
    for i, cell in enumerate(cells):
        sheet.paste(cell, ((i % columns) * THUMB_SIZE, LEGEND_HEIGHT + (i // columns) * (THUMB_SIZE + CAPTION_HEIGHT)))
    return sheet


def show(path):
    """Open an image with PIL's viewer; skipped (with a note) where no display is available."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        log_to_stderr(f"--show: no display (DISPLAY unset); contact sheet saved at {path}")
        return False
    from PIL import Image
    try:
        with Image.open(path) as image:
            image.show()
    except Exception as err:  # viewers fail in many ways; the sheet is saved anyway
        log_to_stderr(f"--show: could not open a viewer ({err}); contact sheet saved at {path}")
        return False
    return True
