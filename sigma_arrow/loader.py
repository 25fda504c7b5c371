"""Load Sigma rules from files, directories and globs into a compiled RuleSet (with a cache)."""

from __future__ import annotations

import glob
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from compiler.errors import InputError, RuleError
from sigma_arrow import cache as ruleset_cache
from sigma_arrow.ruleset import RuleSet

if TYPE_CHECKING:
    from compiler.compile import ParsedDocument
    from compiler.logsource import LogsourceMap

OnError = Literal["collect", "raise", "warn"]
RULE_SUFFIXES = (".yml", ".yaml")
BUILTIN_MAPS = ("windows", "linux", "none")
#: Below this many files a worker pool costs more than it saves.
PARALLEL_MIN_FILES = 400

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------- inputs


def find_rule_files(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """Rule files from files, directories (recursive ``*.yml``/``*.yaml``) and glob patterns."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path not in seen:
            seen.add(path)
            found.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for sub in _walk_rule_files(path):
                add(sub)
        elif path.is_file():
            add(path)
        elif glob.has_magic(str(raw)):
            matches = sorted(glob.glob(str(raw), recursive=True))
            if not matches:
                raise InputError(f"{raw}: no file matches this pattern")
            for match in matches:
                sub = Path(match)
                if sub.is_dir():
                    for inner in _walk_rule_files(sub):
                        add(inner)
                elif sub.is_file():
                    add(sub)
        else:
            raise InputError(f"{raw}: no such file or directory")
    return found


def _walk_rule_files(root: Path) -> list[Path]:
    """Every ``*.yml``/``*.yaml`` file under ``root``, sorted (os.walk: much cheaper than rglob + stat)."""
    found: list[str] = []
    for directory, _dirs, names in os.walk(root):
        found.extend(os.path.join(directory, n) for n in names if n.lower().endswith(RULE_SUFFIXES))
    return [Path(p) for p in sorted(found)]


def _pipeline_sources(specs: Sequence[str]) -> list[tuple[str, str]]:
    """(spec, YAML text) for pipeline files; (name, "") for installed pySigma pipeline plugins."""
    sources = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            try:
                sources.append((spec, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{spec}: cannot read pipeline file: {exc}") from exc
        else:
            sources.append((spec, ""))
    return sources


def installed_pipelines() -> dict[str, Any]:
    """Installed pySigma pipeline plugins by name (e.g. sysmon, windows-logsources, windows-audit)."""
    from sigma.plugins import InstalledSigmaPlugins

    return dict(
        InstalledSigmaPlugins.autodiscover(include_backends=False, include_validators=False).pipelines
    )


def resolve_pipelines(sources: Sequence[tuple[str, str]]) -> list[Any]:
    """ProcessingPipeline objects for (name-or-path, text) pairs from ``_pipeline_sources``."""
    if not sources:
        return []
    from sigma.processing.pipeline import ProcessingPipeline

    plugins: dict[str, Any] | None = None
    pipelines = []
    for spec, text in sources:
        if text:
            try:
                pipelines.append(ProcessingPipeline.from_yaml(text))
            except Exception as exc:  # pySigma raises many error types for bad pipeline files
                raise InputError(f"{spec}: invalid processing pipeline: {exc}") from exc
            continue
        if plugins is None:
            plugins = installed_pipelines()
        if spec not in plugins:
            known = ", ".join(sorted(plugins)) or "none installed"
            raise InputError(f"unknown pipeline {spec!r} (not a file; installed pipelines: {known})")
        factory = plugins[spec]
        pipelines.append(factory() if callable(factory) else factory)
    return pipelines


def _map_source(logsource_map: str | os.PathLike[str]) -> tuple[str, str]:
    """(name, YAML text) of a built-in map name or a map file path."""
    name = str(logsource_map)
    if name in BUILTIN_MAPS:
        text = resources.files("sigma_arrow").joinpath("logsource_maps", f"{name}.yml").read_text("utf-8")
        return name, text
    path = Path(name)
    if not path.is_file():
        raise InputError(
            f"unknown logsource map {name!r} (built-in maps: {', '.join(BUILTIN_MAPS)}; or a YAML file path)"
        )
    try:
        return name, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: cannot read logsource map: {exc}") from exc


def parse_map(name: str, text: str) -> LogsourceMap:
    """Parse a logsource map's YAML text (raises InputError with the reason when malformed)."""
    import yaml

    from compiler.logsource import LogsourceMapError, parse_logsource_map

    try:
        data = yaml.safe_load(text)
        return parse_logsource_map(data, name=Path(name).stem if name not in BUILTIN_MAPS else name)
    except (yaml.YAMLError, LogsourceMapError) as exc:
        raise InputError(f"{name}: invalid logsource map: {exc}") from exc


def load_logsource_map(logsource_map: str | os.PathLike[str] = "windows") -> LogsourceMap:
    """Load a built-in map ("windows", "linux", "none") or a map YAML file."""
    return parse_map(*_map_source(logsource_map))


# ---------------------------------------------------------------- compiling


def parse_chunk(
    chunk: Sequence[tuple[str, str]], pipeline_sources: Sequence[tuple[str, str]]
) -> list[ParsedDocument]:
    """Parse and lower (path, text) documents with the given pipelines (one process's share)."""
    from compiler.compile import parse_document

    pipelines = resolve_pipelines(pipeline_sources)
    return [parse_document(path, text, pipelines) for path, text in chunk]


def _parse_all(
    docs: list[tuple[str, str]], pipeline_sources: list[tuple[str, str]], workers: int
) -> list[ParsedDocument]:
    """Parse every document; with ``workers`` > 1 the work is shared with helper processes."""
    if workers <= 1 or len(docs) < PARALLEL_MIN_FILES:
        return parse_chunk(docs, pipeline_sources)
    # Interleaved shares balance big and small rule directories; order is restored at the end.
    shares = [docs[i::workers] for i in range(workers)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    children = []
    local = list(shares[0])
    for share in shares[1:]:
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "sigma_arrow._parse_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # a failed helper is replaced by parsing its share here
                env=env,
            )
            assert child.stdin is not None
            pickle.dump((share, pipeline_sources), child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.close()
        except OSError:  # no helper process possible here: do the work ourselves
            local.extend(share)
            continue
        children.append((child, share))
    results = parse_chunk(local, pipeline_sources)
    for child, share in children:
        assert child.stdout is not None
        try:
            status, payload = pickle.load(child.stdout)
        except Exception:  # the helper died: do its share here
            status, payload = "error", None
        child.stdout.close()
        child.wait()
        results.extend(payload if status == "ok" else parse_chunk(share, pipeline_sources))
    by_path = {doc.path: doc for doc in results}
    return [by_path[path] for path, _ in docs]


def _default_workers() -> int:
    env = os.environ.get("SIGMA_ARROW_WORKERS")
    if env and env.isdigit():
        return max(1, int(env))
    return min(2, os.cpu_count() or 1)


def load_rules(
    paths: PathLike | Iterable[PathLike],
    pipelines: Sequence[str] = (),
    logsource_map: str | os.PathLike[str] = "windows",
    on_error: OnError = "collect",
    cache: bool = True,
    workers: int | None = None,
) -> RuleSet:
    """Load and compile Sigma rules.

    ``paths``: rule files, directories (recursive ``*.yml``/``*.yaml``) or glob patterns.
    ``pipelines``: installed pySigma pipeline names (``sysmon``, ``windows-logsources``,
    ``windows-audit``, ...) or pipeline YAML files. ``logsource_map``: ``windows``, ``linux``, ``none`` or a
    map YAML file. ``on_error``: ``collect`` (in ``RuleSet.errors``), ``warn`` (also a warning each) or
    ``raise`` (the first RuleError). ``cache``: reuse a compiled ruleset when nothing changed.
    """
    if on_error not in ("collect", "raise", "warn"):
        raise ValueError(f"on_error must be 'collect', 'raise' or 'warn', not {on_error!r}")
    if isinstance(pipelines, str):
        pipelines = [pipelines]
    files = find_rule_files(paths)
    contents: list[tuple[str, bytes]] = []
    for file in files:
        try:
            contents.append((str(file), file.read_bytes()))
        except OSError as exc:
            raise InputError(f"{file}: cannot read: {exc}") from exc
    pipeline_specs = tuple(str(p) for p in pipelines)
    pipeline_sources = _pipeline_sources(pipeline_specs)
    map_name, map_text = _map_source(logsource_map)

    ruleset: RuleSet | None = None
    key = ""
    if cache:
        key = ruleset_cache.cache_key(contents, pipeline_sources, (map_name, map_text))
        ruleset = ruleset_cache.load(key)
    if ruleset is None:
        ruleset = _compile(contents, pipeline_sources, map_name, map_text, workers)
        ruleset.pipelines = pipeline_specs
        if cache:
            ruleset_cache.store(key, ruleset)
    _report(ruleset.errors, on_error)
    return ruleset


def _compile(
    contents: list[tuple[str, bytes]],
    pipeline_sources: list[tuple[str, str]],
    map_name: str,
    map_text: str,
    workers: int | None,
) -> RuleSet:
    from compiler.compile import ParsedDocument, finalize

    resolve_pipelines(pipeline_sources)  # fail early (InputError) on unknown names or bad files
    logsource_map = parse_map(map_name, map_text)
    docs: list[tuple[str, str]] = []
    undecodable: list[ParsedDocument] = []
    for path, raw in contents:
        try:
            docs.append((path, raw.decode("utf-8-sig")))
        except UnicodeDecodeError as exc:
            bad = ParsedDocument(path)
            bad.errors.append(
                RuleError(f"file is not UTF-8 text ({exc.reason} at byte {exc.start})", path=path)
            )
            undecodable.append(bad)
    parsed = _parse_all(docs, pipeline_sources, workers if workers is not None else _default_workers())
    result = finalize([*parsed, *undecodable], logsource_map)
    return RuleSet(
        rules=result.rules,
        errors=result.errors,
        correlations=result.correlations,
        filters=result.filters,
        logsource_map=map_name,
    )


def _report(errors: Sequence[RuleError], on_error: OnError) -> None:
    if not errors:
        return
    if on_error == "raise":
        raise errors[0]
    if on_error == "warn":
        for error in errors:
            warnings.warn(str(error), RuleWarning, stacklevel=3)


class RuleWarning(UserWarning):
    """A rule could not be loaded (``on_error="warn"``)."""


def load_documents(
    docs: Sequence[tuple[str, str]],
    pipelines: Sequence[str] = (),
    logsource_map: str | os.PathLike[str] = "windows",
    on_error: OnError = "collect",
) -> RuleSet:
    """Compile rules given as (name, YAML text) pairs, no files or cache involved (handy in tests)."""
    contents = [(name, text.encode("utf-8")) for name, text in docs]
    map_name, map_text = _map_source(logsource_map)
    ruleset = _compile(contents, _pipeline_sources(tuple(pipelines)), map_name, map_text, workers=1)
    ruleset.pipelines = tuple(pipelines)
    _report(ruleset.errors, on_error)
    return ruleset
