"""A real browser for console tests: Debian's chromium, headless, driven by Playwright (no browser download).

Every console message of type error and every uncaught page error is collected, so a test can assert there were none.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "output" / "console"  # screenshots: the tests' artifacts (git-ignored)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class Tab:
    page: Any
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def fits(self) -> bool:
        """Nothing wider than the viewport: no sideways scrolling of the page itself."""
        return bool(self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def new_tab(browser: Any, width: int = 1280, height: int = 900) -> Tab:
    page = browser.new_page(viewport={"width": width, "height": height})
    tab = Tab(page)
    page.on("console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: tab.errors.append(f"page error: {err}"))
    page.set_default_timeout(30_000)
    return tab
