"""The verified copy behind the local transfertool (no server needed)."""

from __future__ import annotations

import zlib
from pathlib import Path

from localrucio.localcopy import copy_verified, url_path


def _adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def test_copy_creates_parents_and_verifies(tmp_path: Path):
    src = tmp_path / "a" / "f.fits"
    src.parent.mkdir()
    src.write_bytes(b"x" * 1000)
    dst = tmp_path / "b" / "deep" / "f.fits"
    assert copy_verified(str(src), str(dst), 1000, _adler(b"x" * 1000)) == (True, None)
    assert dst.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["f.fits"]


def test_missing_source_fails_with_a_reason(tmp_path: Path):
    ok, reason = copy_verified(str(tmp_path / "nope"), str(tmp_path / "out" / "f"), 1, "00000001")
    assert not ok and reason.startswith("SOURCE [2] No such file or directory")
    assert not (tmp_path / "out" / "f").exists()


def test_checksum_or_size_mismatch_leaves_no_destination(tmp_path: Path):
    src = tmp_path / "f"
    src.write_bytes(b"payload")
    dst = tmp_path / "out" / "f"
    ok, reason = copy_verified(str(src), str(dst), 7, "deadbeef")
    assert not ok and "adler32" in reason and "expected deadbeef" in reason
    ok, reason = copy_verified(str(src), str(dst), 8, _adler(b"payload"))
    assert not ok and "size mismatch" in reason
    assert list(dst.parent.iterdir()) == []  # no destination, no temporary file


def test_md5_is_checked_when_there_is_no_adler32(tmp_path: Path):
    import hashlib

    src = tmp_path / "f"
    src.write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    assert copy_verified(str(src), str(tmp_path / "g"), None, None, good) == (True, None)
    ok, reason = copy_verified(str(src), str(tmp_path / "h"), None, None, "0" * 32)
    assert not ok and "md5" in reason


def test_url_path():
    assert url_path("file://localhost:0/data/rse/drp/a%20b.fits") == "/data/rse/drp/a b.fits"
    assert url_path("file://localhost/data//x/../y") == "/data/y"
    assert url_path("file:///data/y") == "/data/y"
