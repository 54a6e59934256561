"""A fast stand-in for ``lsst.ctrl.bps.panda.edgenode.cmd_line_decoder`` (tests only).

Same command line as the real decoder gets from ctrl_bps_panda's ``add_decoder_prefix``:
``<hex command> <${IN/L}: job name+key:value...> <distribution URI> <key:file+...>
<direct-access files>``, same substitutions (``<ENV:X>``, ``<FILE:key>`` -> the file's base
name, ``{key}`` from the pseudo input name), same exit code mapping. It neither imports
the LSST stack (the real decoder spends ~3 s importing lsst.daf.butler on this machine, per
job) nor copies the distribution files. The tests that check the real decoder use it.
"""

import binascii
import os
import re
import sys


def main() -> int:
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
