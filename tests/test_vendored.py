"""The vendored NaCl for the browser is exactly what VENDORED.md says it is."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "web" / "vendor"


def test_vendored_files_match_their_recorded_checksums() -> None:
    recorded = re.findall(
        r"^\| `([^`]+\.js)` \|.*\| `([0-9a-f]{64})` \|$",
        (VENDOR / "VENDORED.md").read_text(),
        re.MULTILINE,
    )
    assert {name for name, _ in recorded} == {p.name for p in VENDOR.glob("*.js")}
    for name, digest in recorded:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_vendored_nacl_needs_no_webassembly() -> None:
    for path in VENDOR.glob("*.js"):
        assert "WebAssembly" not in path.read_text(), path.name
