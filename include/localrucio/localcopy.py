"""Verified local file copy, as the local transfertool does it (standard library only).

Kept apart from :mod:`localrucio.transfertool` (which needs the Rucio server package) so
that it can be used and tested from the project virtualenv.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import zlib
from pathlib import Path
from urllib.parse import unquote, urlparse

_CHUNK = 4 * 1024 * 1024


def url_path(url: str) -> str:
    """The filesystem path of a ``file://`` PFN (``file://localhost:0/a/b`` -> ``/a/b``)."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise ValueError(f"not a file:// URL: {url}")
    return os.path.normpath(unquote(parsed.path))


def _checksums(path: Path, want_md5: bool) -> tuple[int, str, str | None]:
    """(size, adler32 as 8 hex digits, md5 hex or None) of a file, read back from disk."""
    adler = 1
    md5 = hashlib.md5() if want_md5 else None
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            size += len(chunk)
            adler = zlib.adler32(chunk, adler)
            if md5 is not None:
                md5.update(chunk)
    return size, f"{adler & 0xFFFFFFFF:08x}", md5.hexdigest() if md5 is not None else None


def copy_verified(
    src: str,
    dst: str,
    expected_bytes: int | None,
    expected_adler32: str | None,
    expected_md5: str | None = None,
) -> tuple[bool, str | None]:
    """Copy ``src`` to ``dst`` through a verified temporary file. Returns (ok, reason).

    The destination path only ever receives a file whose size and checksum matched the
    expected values; on any failure the temporary file is removed and the reason returned.
    """
    dst_path = Path(dst)
    tmp = dst_path.parent / f".{dst_path.name}.localrucio-{uuid.uuid4().hex[:12]}.part"
    try:
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                fout.write(chunk)
        want_md5 = bool(expected_md5) and not expected_adler32
        size, adler, md5 = _checksums(tmp, want_md5)
        if expected_bytes is not None and size != int(expected_bytes):
            raise _Mismatch(f"DESTINATION size mismatch: {size} bytes, expected {expected_bytes}")
        if expected_adler32 and int(adler, 16) != int(str(expected_adler32), 16):
            raise _Mismatch(f"DESTINATION checksum mismatch: adler32 {adler}, expected {expected_adler32}")
        if want_md5 and md5 != str(expected_md5).lower():
            raise _Mismatch(f"DESTINATION checksum mismatch: md5 {md5}, expected {expected_md5}")
        os.replace(tmp, dst_path)
        return True, None
    except FileNotFoundError as exc:
        reason = (
            f"SOURCE [{exc.errno}] {exc.strerror}: {src}"
            if exc.filename == src
            else f"DESTINATION [{exc.errno}] {exc.strerror}: {exc.filename}"
        )
        return False, reason
    except _Mismatch as exc:
        return False, str(exc)
    except OSError as exc:
        return False, f"TRANSFER [{exc.errno}] {exc.strerror}: {exc.filename}"
    except Exception as exc:  # noqa: BLE001 - a failed copy is a FAILED transfer, never a crash
        return False, f"TRANSFER {type(exc).__name__}: {exc}"
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass


class _Mismatch(Exception):
    pass
