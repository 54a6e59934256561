"""Where a campaign may read and write: the allowed roots, and the paths checked against them.

A campaign names files and directories that the worker then reads (the campaign file,
its pipeline, the pipeline's imports and config files, which ``lsst.pipe.base``
*executes*) and writes (the work directory under ``data_root``). Whoever can trigger
the DAG chooses the campaign file and ``data_root``, so every such path must resolve
(symlinks followed) inside one of the **allowed roots** the deployment declares. The
campaign layer takes the roots as an argument (:class:`AllowedRoots`); the glue reads
them from the deployment (``hooks.campaign.deployment_roots``: the environment variable
:data:`ALLOWED_ROOTS_ENV`, ``os.pathsep``-separated).

Rules (:func:`check_campaign_paths`, :func:`check_pipeline_files`):

* the campaign file, ``pipeline``, ``data_root`` and any absolute local ``butler_repo``
  (or ``file://`` URI) lie inside an allowed root;
* ``work_dir`` and relative ``butler_repo`` stay inside ``data_root`` (no ``..`` out of
  it, no absolute path elsewhere, no symlink out of it): checked with or without roots;
* the pipeline's ``imports`` and its tasks' config ``file`` overrides (as ``lsst.pipe.base``
  will open them) lie inside an allowed root, or are ``resource://`` / ``eups://``
  locations of installed packages; other URI schemes are refused;
* nothing is expanded: ``$VAR`` and ``~`` in a campaign path or a Param are refused at
  validation (``config.py``), never expanded, so no environment value reaches a path,
  an XCom or a log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multisite_drp.errors import InputError

if TYPE_CHECKING:
    from .config import CampaignConfig

__all__ = ["ALLOWED_ROOTS_ENV", "AllowedRoots", "PathError", "check_campaign_paths", "check_pipeline_files",
           "inside", "require_inside", "roots_or_none"]

#: The deployment's setting the glue reads (``os.pathsep``-separated absolute directories).
ALLOWED_ROOTS_ENV = "MULTISITE_DRP_ALLOWED_ROOTS"
#: Schemes of installed-package locations ``lsst.resources`` resolves inside the software stack.
PACKAGE_SCHEMES = ("resource", "eups")
MAX_PIPELINE_FILES = 32
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class PathError(InputError, ValueError):
    """A path leaves the allowed roots (or its data_root); the message names the field."""


@dataclass(frozen=True)
class AllowedRoots:
    """Absolute directories (symlinks resolved) that campaign paths must lie inside."""

    roots: tuple[Path, ...]
    source: str = "allowed roots"  # where they came from, for messages

    @classmethod
    def of(cls, roots: Iterable[str | os.PathLike[str]], source: str = "allowed roots") -> AllowedRoots:
        out: list[Path] = []
        for r in roots:
            text = os.fspath(r)
            if not text:
                continue
            p = Path(text)
            if not p.is_absolute():
                raise PathError(f"{source}: {text!r} is not an absolute path; expected absolute directories")
            out.append(p.resolve())
        return cls(tuple(dict.fromkeys(out)), source)

    @classmethod
    def parse(cls, value: str, source: str = ALLOWED_ROOTS_ENV) -> AllowedRoots:
        """From an ``os.pathsep``-separated string (the environment variable's form)."""
        return cls.of(value.split(os.pathsep), source)

    def contains(self, path: Path) -> bool:
        return any(inside(path, r) for r in self.roots)

    def describe(self) -> str:
        return f"{self.source} [{', '.join(str(r) for r in self.roots) or 'none'}]"


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _uri_scheme(value: str) -> str | None:
    m = _SCHEME.match(value)
    return m.group(1).lower() if m else None


def require_inside(path: Path, roots: AllowedRoots, where: str, shown: str) -> None:
    """``path`` (symlinks resolved) lies inside ``roots``; :class:`PathError` naming ``where`` otherwise."""
    resolved = path.resolve()
    if not roots.contains(resolved):
        via = "" if resolved == Path(os.path.normpath(path.absolute())) else f" (resolves to {resolved})"
        raise PathError(f"{where}: {shown}{via} is outside the {roots.describe()}; expected a path inside one "
                        f"of them (the deployment declares them in {ALLOWED_ROOTS_ENV})")


def _within_data_root(value: str, full: Path, data_root: Path, where: str) -> None:
    """``full`` (the path ``value`` names) must stay inside ``data_root``, lexically and resolved."""
    lexical = Path(os.path.normpath(full))
    if not inside(lexical, Path(os.path.normpath(data_root))):
        raise PathError(f"{where}: {value!r} leaves data_root {data_root}; expected a path inside it")
    resolved, root = full.resolve(), data_root.resolve()
    if not inside(resolved, root):
        raise PathError(f"{where}: {value!r} resolves to {resolved} (a symbolic link), outside data_root {root}; "
                        "expected a path inside it")


def check_campaign_paths(config: CampaignConfig, campaign_file: Path, roots: AllowedRoots | None) -> None:
    """The rules above for the campaign's own paths; ``roots`` None checks only the data_root rules."""
    where = str(campaign_file)
    if roots is not None:
        require_inside(Path(campaign_file), roots, f"{where}: campaign file", str(campaign_file))
        # As written (relative to the campaign file), so a symbolic link on the way is shown resolved.
        for field, value in (("pipeline", config.pipeline), ("data_root", config.data_root)):
            require_inside(config.base_dir / value, roots, f"{where}: {field}", repr(value))
    data_root = config.data_root_path
    _within_data_root(config.work_dir, config.work_path, data_root, f"{where}: work_dir")
    for i, s in enumerate(config.sites):
        field = f"{where}: sites[{i}] ({s.name}).butler_repo"
        scheme = _uri_scheme(s.butler_repo)
        if scheme is not None and scheme != "file":
            continue  # a remote repository (s3://, https://...): nothing on this worker
        local = s.butler_repo[len("file://"):] if scheme == "file" else s.butler_repo
        p = Path(local)
        if p.is_absolute():
            if roots is not None:
                require_inside(p, roots, field, repr(s.butler_repo))
        else:
            _within_data_root(s.butler_repo, data_root / p, data_root, field)


def _pipeline_refs(doc: Any) -> list[tuple[str, str]]:
    """(what, location) of every file a pipeline document makes lsst.pipe.base open."""
    out: list[tuple[str, str]] = []
    if not isinstance(doc, dict):
        return out
    for key in ("imports", "inherits"):
        entries = doc.get(key)
        for e in entries if isinstance(entries, list) else [entries] if entries is not None else []:
            loc = e.get("location") if isinstance(e, dict) else e
            out.append((key, loc if isinstance(loc, str) else repr(loc)))
    tasks = doc.get("tasks")
    for label, task in (tasks.items() if isinstance(tasks, dict) else []):
        configs = task.get("config") if isinstance(task, dict) else None
        for c in configs if isinstance(configs, list) else [configs] if configs is not None else []:
            files = c.get("file") if isinstance(c, dict) else None
            for f in files if isinstance(files, list) else [files] if files is not None else []:
                out.append((f"tasks.{label}.config.file", f if isinstance(f, str) else repr(f)))
    return out


def check_pipeline_files(pipeline: Path, doc: Any, roots: AllowedRoots, where: str,
                         load: Any) -> list[Path]:
    """Every file the pipeline makes ``lsst.pipe.base`` open lies inside ``roots`` (imports followed).

    ``load(path)`` reads an imported pipeline document (the safe loader). Locations are
    taken as lsst.pipe.base takes them: ``os.path.expandvars`` then, if relative, from the
    working directory. Only the check sees the expansion; messages show the location as
    written. Returns the local files checked.
    """
    seen: list[Path] = []
    queue: list[tuple[Path, Any]] = [(pipeline, doc)]
    while queue:
        current, current_doc = queue.pop(0)
        for what, loc in _pipeline_refs(current_doc):
            field = f"{where}: pipeline: {current} {what} {loc!r}"
            expanded = os.path.expandvars(loc)  # what lsst.pipe.base opens (ImportIR, ConfigIR)
            scheme = _uri_scheme(expanded)
            if scheme in PACKAGE_SCHEMES:
                continue
            if scheme is not None and scheme != "file":
                raise PathError(f"{field}: a {scheme}:// location; expected a file inside the {roots.describe()} "
                                f"or an installed package ({', '.join(s + '://' for s in PACKAGE_SCHEMES)})")
            local = Path(expanded[len("file://"):] if scheme == "file" else expanded)
            resolved = local.resolve()
            if not roots.contains(resolved):
                raise PathError(f"{field} is outside the {roots.describe()}; expected a file inside one of them")
            if what in ("imports", "inherits") and resolved not in seen:
                seen.append(resolved)
                if len(seen) > MAX_PIPELINE_FILES:
                    raise PathError(f"{where}: pipeline: imports more than {MAX_PIPELINE_FILES} files; expected fewer")
                queue.append((resolved, load(resolved)))
    return seen


def roots_or_none(roots: AllowedRoots | Sequence[str | os.PathLike[str]] | None) -> AllowedRoots | None:
    """Accept ``AllowedRoots``, a list of directories, or None (no root check)."""
    if roots is None or isinstance(roots, AllowedRoots):
        return roots
    return AllowedRoots.of(roots)
