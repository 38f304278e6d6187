"""Headless Chromium for the dashboard tests, driven by selenium.

Debian's `chromium` and `chromium-driver` (`python tests/browser.py install` installs
them when missing; `make test` does). Selenium is pointed at /usr/bin/chromedriver, so
it never downloads a driver. Each Browser has a fresh profile and records the console
(`goog:loggingPrefs`). Without a browser the tests are skipped with the reason, except
in CI (`CI=true`), where they must run.

Selenium calls block; the tests make them from a thread (`Browser.call`), so the
reactor stays free for whatever the page talks to.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import tempfile
import unittest
from collections.abc import Sequence
from pathlib import Path

from twisted.internet import threads

from tests.host_packages import apt_install, running_in_ci

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1440,900",
    "--lang=en-US",
)


def screenshot_dir() -> Path:
    """Where screenshots go: $JOBSCHED_SCREENSHOTS (`make screenshots` sets it to
    docs/screenshots), else `screenshots/` in the run's scratch directory."""
    return Path(os.environ.get("JOBSCHED_SCREENSHOTS") or "screenshots").absolute()


def unavailable_reason() -> str | None:
    """Why no browser test can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (run `python tests/browser.py install` as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def require_browser() -> None:
    """Skip the test with the reason when there is no browser; fail in CI."""
    reason = unavailable_reason()
    if reason is None:
        return
    if running_in_ci():
        raise AssertionError(f"the browser tests must run in CI: {reason}")
    raise unittest.SkipTest(f"no browser: {reason}")


def spki_hash(certificate: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: how Chromium's
    --ignore-certificate-errors-spki-list names a certificate to accept."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return base64.b64encode(digest.finalize()).decode()


class Browser:
    """One headless Chromium with a fresh profile; it accepts the HTTPS certificates
    in `trusted` (a test CA it does not know) and no others."""

    def __init__(self, trusted: Sequence[Path] = ()) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = tempfile.mkdtemp(prefix="jobsched-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")
        if trusted:
            hashes = ",".join(spki_hash(path) for path in trusted)
            options.add_argument(f"--ignore-certificate-errors-spki-list={hashes}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.driver.set_page_load_timeout(60)
        self.driver.set_script_timeout(30)

    @classmethod
    async def start(cls, trusted: Sequence[Path] = ()) -> Browser:
        return await threads.deferToThread(cls, trusted)

    async def call(self, function, *args):
        """Run `function(*args)` (selenium calls) in a thread; its result."""
        return await threads.deferToThread(function, *args)

    def console(self) -> list[dict]:
        """Console entries since the last call (blocking)."""
        return self.driver.get_log("browser")

    def screenshot(self, name: str) -> Path:
        """Save the window as <screenshot_dir>/<name>.png (blocking)."""
        directory = screenshot_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)


def install() -> int:
    """apt-get install chromium and chromium-driver when either is missing."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        print("chromium and chromium-driver are already installed")
        return 0
    return apt_install(*PACKAGES)


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit(f"usage: {sys.argv[0]} install")
    sys.exit(install())
