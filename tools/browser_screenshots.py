"""Refresh docs/screenshots/ (shown in README) from the built book and the lab test's screenshots.

Run after `make book` and `make browser-test`: `make screenshots` (args: chapter, widget chapter, book dir). Writes the landing page, one chapter
(scrolled to its first plot) and one widget before/after a change, as palette PNGs of modest size.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_book import serve  # noqa: E402
from browser_common import ROOT, SCREENSHOTS, browser  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def content_box(paths: list[Path], pad: int = 10) -> tuple[int, int, int, int]:
    """The smallest box holding every non-white pixel of all ``paths`` (one box, so before/after align)."""
    from PIL import Image, ImageOps

    boxes = [ImageOps.invert(Image.open(p).convert("RGB")).getbbox() or (0, 0, 1, 1) for p in paths]
    return (max(0, min(b[0] for b in boxes) - pad), max(0, min(b[1] for b in boxes) - pad),
            max(b[2] for b in boxes) + pad, max(b[3] for b in boxes) + pad)


def shrink(src: Path, dst: Path, width: int = 1100, box: tuple[int, int, int, int] | None = None) -> None:
    from PIL import Image

    im = Image.open(src).convert("RGB")
    if box is not None:
        im = im.crop((box[0], box[1], min(box[2], im.width), min(box[3], im.height)))
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    print(f"{dst.relative_to(ROOT)}: {im.width}x{im.height}, {dst.stat().st_size // 1024} KiB")


def main(chapter: str = "12", widget: str = "00", html: str = "build/book/html") -> int:
    # chapter 12: code, a plot and display maths in one screen (on a machine whose matplotlib font cache
    # lacks the STIX fonts, 01's first log-scale plot is preceded by a block of findfont warnings)
    html = ROOT / html
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = SCREENSHOTS / "readme"
    tmp.mkdir(parents=True, exist_ok=True)
    page_of = next((html / "notebooks").glob(f"{chapter}_*.html"))
    httpd, base = serve(html)
    try:
        with browser() as b:
            p = b.new_page(viewport={"width": 1280, "height": 860})
            p.goto(base + "book/index.html")
            p.wait_for_timeout(1000)
            p.screenshot(path=str(tmp / "landing.png"))
            p.goto(base + f"notebooks/{page_of.name}")
            p.evaluate("window.MathJax ? MathJax.startup.promise : null")
            img = p.locator(".cell_output img").first
            img.evaluate("e => e.scrollIntoView({block: 'center'})")
            p.wait_for_timeout(1000)
            p.screenshot(path=str(tmp / "chapter.png"))
    finally:
        httpd.shutdown()
    shrink(tmp / "landing.png", OUT / "book_landing.png")
    shrink(tmp / "chapter.png", OUT / "book_chapter.png")
    srcs = {when: next((SCREENSHOTS / "lab").glob(f"{widget}_*_{when}.png")) for when in ("before", "after")}
    box = content_box(list(srcs.values()))        # the output area without its empty right-hand margin
    for when, src in srcs.items():
        shrink(src, OUT / f"widget_{when}.png", width=900, box=box)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
