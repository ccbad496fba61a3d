"""Open every page of the built book in headless Chromium and check it (issue 21).

Fails a page on: an image that does not load, maths left unrendered (raw $$, \\( or \\[ in the text, a
MathJax error, a math element without MathJax output), an error output cell, a link to a page or anchor
of the book that does not exist, or any request that leaves the machine (the book must work offline).
Screenshots go to build/screenshots/book/.  Usage: python tools/browser_book.py build/book/html
"""
from __future__ import annotations

import argparse
import functools
import http.server
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_common import SCREENSHOTS, Report, browser  # noqa: E402

SKIP = {"genindex.html", "search.html", "index.html"}   # index.html: the redirect to book/index.html

PAGE_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const main = document.querySelector('main') || document.body;
  const imgs = Array.from(document.images).map(i => ({src: i.currentSrc || i.src,
      ok: i.complete && i.naturalWidth > 0}));
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, .highlight, mjx-container, .MathJax').forEach(e => e.remove());
  const text = clone.innerText || clone.textContent || '';
  const maths = Array.from(main.querySelectorAll('.math'));
  return {
    imgs,
    text,
    mathCount: maths.length,
    mathUnrendered: maths.filter(m => !m.querySelector('mjx-container') && !m.closest('mjx-container')
                                    && m.tagName !== 'MJX-CONTAINER').length,
    mathErrors: Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]')).map(e =>
      e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5),
    errorOutputs: Array.from(main.querySelectorAll('.cell_output .output.traceback, .cell_output .output.error'))
                     .map(e => e.textContent.slice(0, 200)),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
  };
}
"""


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # noqa: D401 - silence the access log
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


@functools.lru_cache(maxsize=None)
def ids_of(path: Path) -> frozenset[str]:
    return frozenset(re.findall(r'\bid="([^"]+)"', path.read_text(errors="replace")))


def check_link(html: Path, page: Path, href: str, base: str, page_url: str) -> str | None:
    """None when `href` is fine, else what is wrong. Only links into the book are followed."""
    if href.startswith(("mailto:", "javascript:", "data:")):
        return None
    url = urljoin(page_url, href)
    if not url.startswith(base):
        return None                               # an external link: the reader's browser follows it
    parts = urlsplit(url)
    rel = unquote(parts.path[len(urlsplit(base).path):])
    target = html / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    if not target.exists():
        return f"broken link {href!r}: {rel} does not exist"
    if parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in ids_of(target):
        return f"broken link {href!r}: no anchor #{parts.fragment} in {rel}"
    return None


def check_page(page, html: Path, rel: str, base: str, shots: Path) -> list[str]:
    outside: list[str] = []
    handler = lambda req: outside.append(req.url) if not req.url.startswith((base, "data:", "blob:")) else None  # noqa: E731
    page.on("request", handler)
    try:
        url = base + rel
        page.goto(url, wait_until="load")
        info = page.evaluate(PAGE_JS)
        page.screenshot(path=str(shots / (rel.replace("/", "__").removesuffix(".html") + ".png")))
    finally:
        page.remove_listener("request", handler)
    problems = [f"image does not load: {i['src']}" for i in info["imgs"] if not i["ok"]]
    for pat, what in ((r"\$\$", "$$"), (r"\\\(", "\\("), (r"\\\[", "\\["), (r"\\begin\{", "\\begin{")):
        m = re.search(pat, info["text"])
        if m:
            ctx = info["text"][max(0, m.start() - 40): m.end() + 40].replace("\n", " ")
            problems.append(f"unrendered maths ({what}) near: ...{ctx}...")
    if info["mathUnrendered"]:
        problems.append(f"{info['mathUnrendered']} of {info['mathCount']} math elements not typeset by MathJax")
    problems += [f"MathJax error: {e}" for e in info["mathErrors"]]
    problems += [f"error output: {e}" for e in info["errorOutputs"]]
    for href in sorted(set(info["links"])):
        bad = check_link(html, html / rel, href, base, url)
        if bad:
            problems.append(bad)
    problems += [f"request leaves the machine (the book must work offline): {u}" for u in sorted(set(outside))]
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path, nargs="?", default=Path("build/book/html"))
    args = ap.parse_args(argv)
    html = args.html.resolve()
    if not (html / "book" / "index.html").exists():
        raise SystemExit(f"no book at {html} (run `make book` first)")
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not p.relative_to(html).parts[0].startswith("_") and p.relative_to(html).as_posix() not in SKIP)
    shots = SCREENSHOTS / "book"
    shots.mkdir(parents=True, exist_ok=True)
    report = Report("book pages")
    httpd, base = serve(html)
    try:
        with browser() as b:
            ctx = b.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            for rel in pages:
                t = time.perf_counter()
                try:
                    problems = check_page(page, html, rel, base, shots)
                except Exception as e:  # a page that cannot even be opened fails, it does not stop the run
                    problems = [f"{type(e).__name__}: {e}"]
                report.check(f"book page {rel}", problems, time.perf_counter() - t)
            ctx.close()
    finally:
        httpd.shutdown()
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
