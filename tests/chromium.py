"""Headless Chromium for the page tests, driven over the DevTools protocol on a pipe.

Why a pipe and no Playwright / Selenium: `--remote-debugging-pipe` takes NUL-terminated
JSON commands on file descriptor 3 and answers on 4, so twenty lines of the standard library
load a page, run JavaScript in it, click, watch for dialogs and take screenshots, with no
Python dependency and no browser download. The browser is Debian's `chromium`
(`tools/install_chromium.sh`, run by `.ci/run`); `LESIONLENS_CHROMIUM` names another binary.

    with Chromium() as browser:
        page = browser.open(Path("index.html").resolve().as_uri())
        rows = page.evaluate("document.querySelectorAll('tbody tr').length")
        page.screenshot("gallery.png")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Flags for a machine with no screen and a closed network (the environment notes): without
# the background-networking ones Chromium keeps dialling Google's hosts.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--disable-dev-shm-usage",  # containers' small /dev/shm
    "--remote-debugging-pipe",
)
# Before any page script: alert / confirm / prompt are recorded, not shown.
_RECORD_DIALOGS = (
    "window.__dialogs = [];"
    "for (const n of ['alert', 'confirm', 'prompt'])"
    "  window[n] = (m) => { window.__dialogs.push(n + ':' + m); };"
)


def find_chromium() -> str | None:
    """The browser binary, or None: $LESIONLENS_CHROMIUM, then chromium on the PATH."""
    chosen = os.environ.get("LESIONLENS_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _above_9(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class ChromiumError(RuntimeError):
    """The browser died, timed out, or answered a command with an error."""


class Page:
    """One tab: navigate, evaluate JavaScript, screenshot."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    @property
    def exceptions(self) -> list[str]:
        """Uncaught page errors so far, as the console shows them."""
        return self.browser.exceptions.get(self.session, [])

    def send(self, method: str, **params: Any) -> dict:
        return self.browser.send(method, session=self.session, **params)

    def navigate(self, url: str, timeout_s: float = 30.0) -> None:
        self.browser.events.clear()
        self.send("Page.navigate", url=url)
        self.browser.wait_event("Page.loadEventFired", self.session, timeout_s)

    def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """The value of a JavaScript expression (a promise is awaited), as JSON gives it."""
        reply = self.browser.send(
            "Runtime.evaluate",
            session=self.session,
            timeout_s=timeout_s,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise ChromiumError(f"{expression[:80]!r} threw: {text}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0) -> Any:
        """Polls until the expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"timed out waiting for {expression!r}")
            time.sleep(0.05)

    def screenshot(self, path: str | Path, full_page: bool = True) -> Path:
        """A PNG of the page (its whole height with `full_page`)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    """A headless Chromium process and its DevTools pipe; a context manager."""

    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 900) -> None:
        binary = binary or find_chromium()
        if not binary:
            raise ChromiumError("no chromium binary (install Debian's chromium package)")
        self.size = (width, height)
        self.profile = tempfile.mkdtemp(prefix="lesionlens-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: the shell puts the pipe
        # ends there and closes the originals before exec (moved above 9 first, so that no
        # redirection overwrites the other end).
        to_browser_r, from_browser_w = (_above_9(fd) for fd in (to_browser_r, from_browser_w))
        redirect = (
            f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} '
            f"{to_browser_r}<&- {from_browser_w}>&-"
        )
        args = [*FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]
        self.proc = subprocess.Popen(
            ["bash", "-c", redirect, binary, *args, "about:blank"],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []
        self.exceptions: dict[str | None, list[str]] = {}

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", timeout_s=5.0)
            except (ChromiumError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChromiumError("timed out waiting for the browser")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise ChromiumError(f"the browser exited (code {self.proc.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(
        self, method: str, session: str | None = None, timeout_s: float = 30.0, **params: Any
    ) -> dict:
        """Sends one command and returns its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            command["sessionId"] = session
        os.write(self._to_browser, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise ChromiumError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self._keep(message)

    def wait_event(self, method: str, session: str | None, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self.events:
                if event["method"] == method and event.get("sessionId") == session:
                    self.events.remove(event)
                    return event
            self._keep(self._read_message(deadline))

    def _keep(self, message: dict) -> None:
        if "method" not in message:
            return
        self.events.append(message)
        if message["method"] == "Runtime.exceptionThrown":
            details = message["params"]["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.exceptions.setdefault(message.get("sessionId"), []).append(text)

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        width, height = self.size
        page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        page.send("Page.addScriptToEvaluateOnNewDocument", source=_RECORD_DIALOGS)
        return page

    def open(self, url: str, timeout_s: float = 30.0) -> Page:
        """A new tab with `url` loaded (its load event fired)."""
        page = self.new_page()
        page.navigate(url, timeout_s)
        return page


def browser_or_skip():
    """A started `Chromium`, or pytest's skip with the reason printed in the run's summary
    (a warning: `pytest -q` shows those) when no browser is installed."""
    import warnings

    import pytest

    if find_chromium() is None:
        reason = (
            "headless Chromium tests skipped: no chromium binary (tools/install_chromium.sh "
            "installs Debian's package; LESIONLENS_CHROMIUM names another)"
        )
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)
    return Chromium()
