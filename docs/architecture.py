"""Draws docs/architecture.svg, the picture of service/ on the README's first screen, from the code
itself: each package's box lists the modules it holds now. Run it after adding or removing a
module (tests/service/test_layout.py fails while the picture is out of date):

    python docs/architecture.py            # writes docs/architecture.svg
    python docs/architecture.py OUT.svg    # writes elsewhere
"""

from __future__ import annotations

import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "service"
WIDTH, HEIGHT = 900, 486
FONT = "font-family='Helvetica, Arial, sans-serif'"
STROKE = "stroke='#374151'"
TITLE = "service/: each package imports only what stands below it; no door imports the other"
FOOT = "ONNX Runtime, over models/sentiment/<version>/ (the contract: model_contract.py)"
# package: (title, what it is, x, y, width, height, fill)
BOXES = {
    "grpc": ("grpc/", "the gRPC door :50051", 20, 60, 265, 94, "#dbeafe"),
    "http": ("http/", "the HTTP door :8080", 305, 60, 265, 94, "#dbeafe"),
    "calls": ("calls/", "what each call means, once for both doors", 20, 181, 550, 64, "#dcfce7"),
    "bulk": ("bulk/", "files and data frames, no server", 590, 60, 125, 185, "#ede9fe"),
    "versions": ("versions/", "which model versions serve", 20, 272, 695, 64, "#fef9c3"),
    "core": ("core/", "the request path: no grpc, no starlette, no prometheus", 20, 363, 695, 64, "#fee2e2"),
    "ops": ("ops/", "beside every layer", 735, 60, 145, 367, "#f3f4f6"),
}
COLUMNS = {  # narrow and tall: their text in a column
    "ops": ["beside every", "layer:", ""],
    "bulk": ["no server:"],
}
ARROWS = (  # (from x, from y, to x, to y): who calls whom
    (152, 154, 152, 181),
    (437, 154, 437, 181),
    (295, 245, 295, 272),
    (652, 245, 652, 272),
    (367, 336, 367, 363),
    (367, 427, 367, 452),
)


def modules(package: str) -> list[str]:
    return sorted(p.stem for p in (SERVICE / package).glob("*.py") if p.name != "__init__.py")


def text(
    x: float, y: float, value: str, size: int = 12, weight: str = "normal", anchor: str = "start"
) -> str:
    return (
        f"<text x='{x}' y='{y}' {FONT} font-size='{size}' font-weight='{weight}' "
        f"text-anchor='{anchor}' fill='#111827'>{escape(value)}</text>"
    )


def wrapped(names: list[str], width: float) -> list[str]:
    """Module names joined into lines that fit `width` pixels (about 6.2 pixels a character)."""
    lines, line = [], ""
    for name in names:
        candidate = f"{line} · {name}" if line else name
        if len(candidate) * 6.2 > width and line:
            lines.append(line)
            line = name
        else:
            line = candidate
    return [*lines, line] if line else lines


def box(package: str) -> list[str]:
    title, what, x, y, w, h, fill = BOXES[package]
    parts = [
        f"<rect x='{x}' y='{y}' width='{w}' height='{h}' rx='8' fill='{fill}' {STROKE} stroke-width='1.2'/>",
        text(x + 10, y + 20, title, 14, "bold"),
    ]
    if package in COLUMNS:
        lines = [*COLUMNS[package], *modules(package)]
        parts += [text(x + 10, y + 42 + 17 * i, line, 12) for i, line in enumerate(lines)]
        return parts
    parts.append(text(x + 10 + 8.5 * len(title) + 6, y + 20, what, 12))
    for i, line in enumerate(wrapped(modules(package), w - 20)):
        parts.append(text(x + 10, y + 40 + 16 * i, line, 11))
    return parts


def draw() -> str:
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}'>",
        "<defs><marker id='head' markerWidth='8' markerHeight='8' refX='7' refY='4' orient='auto'>"
        "<path d='M0,0 L8,4 L0,8 z' fill='#374151'/></marker></defs>",
        f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
        text(20, 34, TITLE, 14, "bold"),
    ]
    for package in BOXES:
        parts += box(package)
    for x1, y1, x2, y2 in ARROWS:
        parts.append(
            f"<line x1='{x1}' y1='{y1}' x2='{x2}' y2='{y2 - 2}' {STROKE} stroke-width='1.5' "
            "marker-end='url(#head)'/>"
        )
    parts.append(text(367, 468, FOOT, 12, anchor="middle"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> None:
    target = Path(argv[0]) if argv else ROOT / "docs" / "architecture.svg"
    target.write_text(draw())
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
