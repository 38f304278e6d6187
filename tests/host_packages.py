"""What the suite needs from the host: Debian packages (`python tests/<tool>.py
install` puts them in) and whether this is CI, where nothing may be skipped for want
of them."""

from __future__ import annotations

import os
import subprocess


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def apt_install(*packages: str, recommends: bool = True) -> int:
    """`apt-get update`, then install `packages`; the exit code of the first step that
    fails, else 0."""
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    options = [] if recommends else ["--no-install-recommends"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in ([*apt, "update"], [*apt, "install", "-y", *options, *packages]):
        code = subprocess.call(command, env=env)
        if code:
            return code
    return 0
