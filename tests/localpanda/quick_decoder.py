"""A fast stand-in for ``lsst.ctrl.bps.panda.edgenode.cmd_line_decoder`` (tests only).

Same command line as the real decoder gets from ctrl_bps_panda's ``add_decoder_prefix``:
``<hex command> <${IN/L}: job name+key:value...> <distribution URI> <key:file+...>
<direct-access files>``, same substitutions (``<ENV:X>``, ``<FILE:key>`` -> the file's base
name, ``{key}`` from the pseudo input name), same exit code mapping. Like the real one it
copies the distribution files that are not direct-access (``deliver_input_files``), but
only from a local ``file://`` distribution point, the relay's only kind; it has no
EventService or job-name map. It does not import the LSST stack (the real decoder spends
~1.6-3 s of CPU importing lsst.daf.butler and the PanDA client on these machines, per job).
The tests that are not about the decoder itself use it; the relay's test of the real
decoder, the PanDA adapter's first test and the end-to-end campaign run the real one.
"""

import binascii
import os
import re
import shutil
import sys
from urllib.parse import unquote, urlparse


def deliver(distribution: str, files: str, skip_copy: str) -> None:
    """Copy each ``key:file`` of ``files`` not named in ``skip_copy`` from the distribution
    point into the working directory (a directory's files into a directory of that name)."""
    url = urlparse(distribution)
    if url.scheme not in ("", "file"):
        raise SystemExit(f"quick_decoder: only a local distribution point, not {distribution!r}")
    root = unquote(url.path)
    skip = set(skip_copy.split("+"))
    for item in filter(None, files.split("+")):
        key, name = item.split(":", 1)
        if key in skip:
            continue
        src = os.path.join(root, name)
        if os.path.isdir(src):
            shutil.copytree(src, name, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, os.path.basename(name))
        if key == "job_executable":
            os.chmod(os.path.basename(name), 0o777)


def main() -> int:
    if len(sys.argv) > 5:
        deliver(sys.argv[3], sys.argv[4], sys.argv[5])
    cmd = binascii.unhexlify(sys.argv[1]).decode()
    params = sys.argv[2].split("+")
    files = {}
    if len(sys.argv) > 4 and ":" in sys.argv[4]:
        files = dict(item.split(":", 1) for item in sys.argv[4].split("+"))
    cmd = re.sub(r"<ENV:([^>]+)>", lambda m: os.environ[m.group(1)], cmd)
    cmd = re.sub(r"<FILE:([^>]+)>", lambda m: files[m.group(1)], cmd)
    for pair in params[1:]:
        key, value = pair.split(":", 1)
        cmd = cmd.replace("{" + key + "}", value)
    status = os.system(cmd)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) + 128
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


if __name__ == "__main__":
    sys.exit(main())
