"""Contact sheets (PNG) and a static HTML report of what each demo shopper was shown."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

THUMB = 128
LABEL_H = 46
PAD = 8


@dataclass(frozen=True)
class Step:
    """One click of a shopper and the list that answered it."""

    clicked: str
    recommended: Sequence[tuple[str, float, str]]
    latency_ms: float


@dataclass(frozen=True)
class ShopperRun:
    """A shopper's name, what they are after, and their steps."""

    name: str
    story: str
    steps: Sequence[Step]


def _thumb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    return ImageOps.fit(rgb, (THUMB, THUMB))


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: Sequence[str]) -> None:
    font = ImageFont.load_default()
    x, y = xy
    for line in lines:
        draw.text((x, y), line[:22], fill=(20, 20, 20), font=font)
        y += 11


def _short(reason: str, width: int = 22) -> str:
    """``similar_to:motorcycle_left`` -> ``~motorcycle_left`` when space is short."""
    if len(reason) <= width:
        return reason
    kind, _, target = reason.partition(":")
    mark = {"similar_to": "~", "also_viewed_with": "+"}.get(kind, kind[:3] + ":")
    return (mark + target)[:width]


def contact_sheet(run: ShopperRun, images: Mapping[str, bytes], top: int, out: Path) -> Path:
    """One row per click: the clicked photo, an arrow gap, then the top recommended photos."""
    cols = 1 + top
    width = PAD + cols * (THUMB + PAD) + 24
    row_h = THUMB + LABEL_H + PAD
    height = 30 + len(run.steps) * row_h + PAD
    sheet = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 8), f"{run.name}: {run.story}", fill=(0, 0, 0), font=ImageFont.load_default())
    for r, step in enumerate(run.steps):
        y = 30 + r * row_h
        x = PAD
        if step.clicked in images:
            sheet.paste(_thumb(images[step.clicked]), (x, y))
        draw.rectangle([x - 2, y - 2, x + THUMB + 1, y + THUMB + 1], outline=(200, 40, 40), width=2)
        _label(draw, (x, y + THUMB + 2), [f"clicked {step.clicked}", f"{step.latency_ms:.0f} ms"])
        x += THUMB + PAD + 24
        draw.text((x - 20, y + THUMB // 2), "->", fill=(0, 0, 0), font=ImageFont.load_default())
        for item_id, score, reason in list(step.recommended)[:top]:
            if item_id in images:
                sheet.paste(_thumb(images[item_id]), (x, y))
            _label(draw, (x, y + THUMB + 2), [item_id, f"score {score:.3f}", _short(reason)])
            x += THUMB + PAD
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def _data_uri(data: bytes) -> str:
    buf = io.BytesIO()
    _thumb(data).save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def html_report(
    runs: Sequence[ShopperRun], images: Mapping[str, bytes], top: int, out: Path
) -> Path:
    """A self-contained HTML page (images inlined) of every shopper's clicks and lists."""
    cache: dict[str, str] = {}

    def img(item_id: str) -> str:
        if item_id not in images:
            return ""
        if item_id not in cache:
            cache[item_id] = _data_uri(images[item_id])
        alt = html.escape(item_id)
        return f'<img src="{cache[item_id]}" width="{THUMB}" height="{THUMB}" alt="{alt}">'

    parts = [
        "<!doctype html><meta charset='utf-8'><title>visrec demo</title>",
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:4px;"
        "font-size:12px}td.clicked img{outline:3px solid #c33}</style>",
        "<h1>visrec demo: what each shopper was shown after each click</h1>",
    ]
    for run in runs:
        parts.append(f"<h2>{html.escape(run.name)}</h2><p>{html.escape(run.story)}</p><table>")
        for step in run.steps:
            cells = [
                f"<td class='clicked'>{img(step.clicked)}<br>"
                f"clicked <b>{html.escape(step.clicked)}</b>"
                f"<br>{step.latency_ms:.0f} ms</td><td>&rarr;</td>"
            ]
            for item_id, score, reason in list(step.recommended)[:top]:
                cells.append(
                    f"<td>{img(item_id)}<br>{html.escape(item_id)}<br>{score:.3f}"
                    f"<br><i>{html.escape(reason)}</i></td>"
                )
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
