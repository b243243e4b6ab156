"""The contact sheet marks right and wrong: green frames for results sharing a label with the query, red for the
others, blue for the query, a legend line; no marks when the query's labels are unknown."""
from PIL import Image

from utils.retrieval.contact_sheet import (
    BORDER_WIDTH,
    CAPTION_HEIGHT,
    COLOURS,
    LEGEND_HEIGHT,
    SHEET_COLUMNS,
    THUMB_SIZE,
    contact_sheet,
)


def entry_with(tmp_path, query_labels, shared):
    paths = []
    for i in range(len(shared) + 1):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 48), (128, 128, 128)).save(path)
        paths.append(str(path))
    results = [{"rank": r + 1, "distance": r, "index": r, "path": paths[r + 1], "labels": [0],
                "shared_labels": s} for r, s in enumerate(shared)]
    return {"query": paths[0], "topk": len(shared), "query_labels": query_labels, "results": results}


def frame_colour(sheet, cell):
    """The colour on the left edge of a cell's frame."""
    x = (cell % SHEET_COLUMNS) * THUMB_SIZE + 1 + BORDER_WIDTH // 2
    y = LEGEND_HEIGHT + (cell // SHEET_COLUMNS) * (THUMB_SIZE + CAPTION_HEIGHT) + THUMB_SIZE // 2
    return sheet.getpixel((x, y))


def legend_colours(sheet):
    return {sheet.getpixel((x, y)) for x in range(sheet.width) for y in range(LEGEND_HEIGHT)}


def test_frames_show_right_and_wrong_with_a_legend(tmp_path):
    shared = [[0], [], [0, 2], [], [1], [], [3]]  # 7 results: two rows
    sheet = contact_sheet(entry_with(tmp_path, [0, 1, 2, 3], shared))
    assert sheet.size == (SHEET_COLUMNS * THUMB_SIZE, LEGEND_HEIGHT + 2 * (THUMB_SIZE + CAPTION_HEIGHT))
    assert frame_colour(sheet, 0) == COLOURS["query"]
    for i, labels in enumerate(shared, 1):
        assert frame_colour(sheet, i) == COLOURS["right" if labels else "wrong"], i
    assert {COLOURS["query"], COLOURS["right"], COLOURS["wrong"]} <= legend_colours(sheet)


def test_unknown_query_labels_leave_results_unmarked(tmp_path):
    sheet = contact_sheet(entry_with(tmp_path, None, [None, None]))
    assert frame_colour(sheet, 0) == COLOURS["query"]
    assert frame_colour(sheet, 1) == frame_colour(sheet, 2) == (255, 255, 255)
    assert COLOURS["query"] in legend_colours(sheet)
    assert not {COLOURS["right"], COLOURS["wrong"]} & legend_colours(sheet)
    narrow = contact_sheet(entry_with(tmp_path, None, [None]))  # two cells: the sheet widens for the legend
    assert narrow.width > 2 * THUMB_SIZE and narrow.getpixel((narrow.width - 1, LEGEND_HEIGHT + 5)) == (235, 235, 235)
