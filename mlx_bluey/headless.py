"""How the page is driven in headless Chromium, shared by tests/test_web.py and scripts/bench_browser.py."""

from __future__ import annotations

import os
import shutil

# The flags that keep Chromium from reaching out at start (refused connections otherwise, where only the
# package registries can be reached) and from looking for a GPU.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """$MLX_BLUEY_CHROMIUM, else the chromium on PATH, else Debian's."""
    return os.environ.get("MLX_BLUEY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
