"""Shared pieces of the browser tests: Debian's chromium driven by Playwright (no browser download)."""
from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    """The system chromium (Debian package `chromium`); Playwright's own browser download is never used."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("browser tests need Debian's chromium on PATH (apt-get install -y chromium)")


@contextmanager
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Report:
    """Collects named checks; prints each failure and the closing 'N passed, N failed' line."""

    def __init__(self, title: str) -> None:
        self.title, self.passed, self.failed, self.t0 = title, [], [], time.perf_counter()

    def check(self, name: str, problems: list[str], seconds: float | None = None) -> bool:
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        if problems:
            self.failed.append(name)
            print(f"FAIL {name}{took}")
            for p in problems:
                print(f"     - {p}")
        else:
            self.passed.append(name)
            print(f"ok   {name}{took}")
        return not problems

    def finish(self) -> int:
        print(f"{self.title}: {time.perf_counter() - self.t0:.0f} s (contended 2-core machine timings vary)")
        print(f"{len(self.passed)} passed, {len(self.failed)} failed")
        return 1 if self.failed or not self.passed else 0
