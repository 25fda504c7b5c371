"""The compiled-ruleset cache: a pickle per (rule files, pipelines, logsource map, versions) hash.

Location: ``$SIGMA_ARROW_CACHE_DIR`` if set, else ``platformdirs.user_cache_dir("sigma-arrow")``.
A corrupt or unreadable entry is ignored (and rebuilt); writes are atomic (temp file + rename).
"""

from __future__ import annotations

import contextlib
import copyreg
import dataclasses
import functools
import hashlib
import io
import os
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sigma_arrow.ruleset import RuleSet

#: Bump when the pickled layout or the compiler's output changes in a way file hashes do not capture.
CACHE_FORMAT = "5"
#: Entries kept; older ones are removed when a new entry is written.
MAX_ENTRIES = 16


def cache_dir() -> Path:
    """Where cache entries live."""
    override = os.environ.get("SIGMA_ARROW_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("sigma-arrow"))


@functools.cache
def _code_fingerprint() -> str:
    """Hash of the compiler's and loader's source: a code change must never serve stale compiled rules.

    The package version alone does not change between development edits or editable installs.
    """
    import compiler

    digest = hashlib.sha256()
    # Map texts and pipeline contents are part of the key already; this covers the code that reads them.
    roots = [Path(compiler.__file__).parent, Path(__file__).parent / "loader.py"]
    files: list[Path] = []
    for root in roots:
        files.extend(sorted(root.rglob("*.py")) if root.is_dir() else [root])
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _versions() -> str:
    from importlib import metadata

    parts = [f"code={_code_fingerprint()}"]
    for dist in ("sigma-arrow", "pysigma", "pysigma-pipeline-windows", "pysigma-pipeline-sysmon"):
        try:
            parts.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist}=-")
    return ";".join(parts)


def cache_key(
    files: Iterable[tuple[str, bytes]],
    pipelines: Iterable[tuple[str, str]],
    logsource_map: tuple[str, str],
) -> str:
    """Hash of every rule file (path + contents), the pipelines and the map (name + text), and versions."""
    digest = hashlib.sha256()

    def add(text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    add(CACHE_FORMAT)
    add(_versions())
    add(logsource_map[0])
    add(logsource_map[1])
    for name, text in pipelines:
        add(name)
        add(text)
    for path, content in files:
        add(path)
        add(content)
    return digest.hexdigest()


def load(key: str) -> RuleSet | None:
    """Return the cached RuleSet for ``key``, or None (missing or unreadable)."""
    path = cache_dir() / f"{key}.pickle"
    try:
        with path.open("rb") as handle:
            value = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
        return None
    return value if isinstance(value, RuleSet) else None


def _subclasses(cls: type) -> list[type]:
    found = [cls]
    sub: type
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


def _dispatch_table() -> dict[type, Any]:
    """Reducers that rebuild frozen dataclasses through ``__init__``.

    The default pickling of slotted frozen dataclasses goes through ``dataclasses._dataclass_setstate``
    (which calls ``fields()`` per object) and dominates warm loads; ``cls(*values)`` is several times
    faster. The table is private to our Pickler: global pickling behaviour is unchanged.
    """
    from compiler import ir, model

    table: dict[type, Any] = dict(copyreg.dispatch_table)
    classes = [*_subclasses(ir.Node), model.RuleMeta, model.Route, model.CompiledRule]
    classes += [model.Correlation, model.SigmaFilter]
    for cls in classes:
        names = tuple(f.name for f in dataclasses.fields(cls))
        table[cls] = functools.partial(_reduce, names=names)
    return table


def _reduce(obj: Any, names: tuple[str, ...]) -> tuple[type, tuple[Any, ...]]:
    return type(obj), tuple(getattr(obj, name) for name in names)


def dumps(ruleset: RuleSet) -> bytes:
    """Serialize a RuleSet the way the cache stores it."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _dispatch_table()
    pickler.dump(ruleset)
    return buffer.getvalue()


def store(key: str, ruleset: RuleSet) -> None:
    """Write ``ruleset`` under ``key`` (best effort: an unwritable cache only costs speed)."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pickle")
        with os.fdopen(fd, "wb") as handle:
            handle.write(dumps(ruleset))
        os.replace(tmp, directory / f"{key}.pickle")
        _prune(directory)
    except OSError:
        return


def _prune(directory: Path) -> None:
    entries = sorted(directory.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[MAX_ENTRIES:]:
        with contextlib.suppress(OSError):
            stale.unlink()


def clear() -> int:
    """Remove every cache entry; returns how many were removed."""
    removed = 0
    for entry in cache_dir().glob("*.pickle"):
        try:
            entry.unlink()
            removed += 1
        except OSError:
            pass
    return removed
