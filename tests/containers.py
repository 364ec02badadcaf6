"""Containers built and run for real with Debian's podman (a pytest plugin of conftest.py):
the node's image made once per run by `scripts/image` (from a Debian base made with
debootstrap, since no registry can be reached here), for tests/test_image.py and
tests/test_compose.py alike."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/onionchat:latest"
# This machine's podman: crun cannot run here and the default ulimits cannot be set
# (/work/shared/notes/containers.md).
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""


def need(tool: str, where: str = "scripts/system-packages") -> str:
    """A tool the test drives, found; in CI its absence is a failure, never a skip."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}:/usr/sbin"
    found = shutil.which(tool, path=path)
    if found is None:
        why = f"{tool} is missing: {where} installs it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    return found


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment every podman command here runs in."""
    for tool in ("podman", "runc", "debootstrap"):
        need(tool)
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    # pip in the build trusts what the host trusts: here the network has a CA of its own.
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        env.setdefault("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    return env


@pytest.fixture(scope="session")
def image(podman: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """Built once per run by the project's own entry point; podman keeps the layers between
    runs, and the debootstrap base in build/image/."""
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    with log.open("wb") as out:
        built = subprocess.run(
            [str(ROOT / "scripts" / "image")],
            env=podman,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=540,
        )
    assert built.returncode == 0, log.read_text(errors="replace")[-5000:]
    print(f"\nscripts/image: {time.monotonic() - started:.1f} s")
    return IMAGE
