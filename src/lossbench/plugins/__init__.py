"""Plugins: users' losses, models and data sources, registered like the built-in ones.

Two ways to bring code (README, "Bring your own loss, model or data"):

- an installed package declares entry points in the groups ``lossbench.losses``,
  ``lossbench.models`` and ``lossbench.sources`` (``importlib.metadata``); an
  entry point ``NAME = package.module`` names the module whose import registers
  the entry ``NAME`` with the usual decorator (``@register_loss("NAME")``);
- a config's top-level ``plugins:`` list names modules, or ``.py`` files
  (relative to the config file), imported before anything is built.

:func:`load_plugins` loads both (entry points once per process) and checks each
new entry against its registry's contract (:mod:`lossbench.plugins.contracts`):
a plugin that does not import, clashes with another entry or breaks the
contract is one UserError line before any data is read. Every process that
builds things calls it (train, each sweep cell and tuning trial, eval, predict,
export); ``lossbench list`` and ``report`` load the entry points only.
:func:`plugin_versions` is what a run folder records of them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from lossbench.config import Experiment, is_plugin_file, read_documents
from lossbench.data import SOURCES
from lossbench.errors import UserError
from lossbench.losses import LOSSES, check_spec
from lossbench.models import MODELS
from lossbench.plugins.contracts import loss_problem, model_problem, source_problem
from lossbench.registry import Registry, registering_from

__all__ = [
    "GROUPS", "Plugin", "load_config_plugins", "load_entry_points", "load_experiment_code", "load_plugins",
    "loaded_plugins", "plugin_changes", "plugin_differences", "plugin_versions",
]

#: entry-point group -> (the registry its entries fill, the contract an entry must keep)
GROUPS: dict[str, tuple[Registry, Callable[[Any], str | None]]] = {
    "lossbench.losses": (LOSSES, loss_problem),
    "lossbench.models": (MODELS, model_problem),
    "lossbench.sources": (SOURCES, source_problem),
}


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin: the file or module imported, how messages name it, and the version a run folder records
    (``sha256:<hex>`` of its file, or ``<package> <version>`` for an installed package)."""

    name: str
    origin: str
    version: str


#: what this process loaded: a plugin file's absolute path, a module's name or a distribution's name -> Plugin
_loaded: dict[str, Plugin] = {}
#: the search path whose entry points were loaded last (None: not yet)
_scanned: list[str] | None = None


def loaded_plugins() -> list[Plugin]:
    """The plugins this process has loaded, in the order they loaded."""
    return list(_loaded.values())


def plugin_versions() -> dict[str, str]:
    """What a run folder records of its plugins (config.yaml's ``versions``): ``plugin <module>`` -> version."""
    return {f"plugin {p.name}": p.version for p in _loaded.values()}


def plugin_differences(recorded: dict[str, str] | None) -> list[tuple[str, str, str]]:
    """(plugin, version recorded, version now) of each plugin a run recorded (config.yaml's ``versions``) that
    this process has loaded in another version (a file edited since, a package upgraded)."""
    now = plugin_versions()
    return [(key.removeprefix("plugin "), then, now[key]) for key, then in (recorded or {}).items()
            if key.startswith("plugin ") and key in now and now[key] != then]


def plugin_changes(recorded: dict[str, str] | None) -> list[str]:
    """:func:`plugin_differences` as warning lines."""
    return [f"{name}: the plugin changed since the run trained ({then} then, {now} now); its numbers may not be "
            "reproduced" for name, then, now in plugin_differences(recorded)]


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _import_problem(exc: BaseException, file: Path | None = None) -> str:
    """The module's own error in one line, with the line of the user's code that raised it: the last frame in
    the plugin's ``file``, else the last outside Python's and the installed packages' folders, else the last."""
    message = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    installed = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    own = ([f for f in frames if file is not None and f.filename == str(file)]
           or [f for f in frames if not f.filename.startswith(installed)] or frames[-1:])
    where = f" ({own[-1].filename}, line {own[-1].lineno})" if own else ""
    return f"{type(exc).__name__}: {message}{where}"


def _new_entries(origin: str) -> list[tuple[str, Registry, Callable[[Any], str | None]]]:
    return [(name, registry, check) for registry, check in GROUPS.values()
            for name, _ in registry.items() if registry.origin(name) == origin]


def _forget(origin: str) -> None:
    """Unregister everything ``origin`` registered (a plugin refused), so a fixed one can be loaded again."""
    for registry, _ in GROUPS.values():
        registry.discard(origin)


def _check_entries(origin: str, where: str) -> None:
    """Refuse (and unregister) the entries ``origin`` registered when one breaks its registry's contract."""
    for name, registry, check in _new_entries(origin):
        problem = check(registry.get(name))
        if problem is not None:
            _forget(origin)
            raise UserError(f"{where}{registry.kind} {name!r} from {origin} {problem}")


def _import(import_module: Callable[[], Any], origin: str, where: str, file: Path | None = None) -> None:
    """Run ``import_module`` with entries registered as coming from ``origin``; any error is one line."""
    try:
        with registering_from(origin):
            import_module()
    except UserError as exc:  # a name clash, raised by the registry
        _forget(origin)
        raise UserError(f"{where}{exc}") from None
    except Exception as exc:  # noqa: BLE001 - the plugin's own error, reported as one line
        _forget(origin)
        raise UserError(f"{where}{origin} does not import: {_import_problem(exc, file)}") from None
    _check_entries(origin, where)


def _imported_as(path: Path) -> str | None:
    """The name of a module already imported from file ``path`` (an installed plugin package's), if any."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).name == path.name and Path(file).resolve() == path:
            return name
    return None


def _load_file(path: Path, where: str) -> Plugin:
    """Import a plugin ``.py`` file under a module name of its own, unless it was imported as a module already
    (the same file, installed as a package whose entry point loaded it): then its entries are registered."""
    if not path.is_file():
        raise UserError(f"{where}{path}: no such plugin file; give a .py file relative to the config file, "
                        "or a module name")
    if (imported := _imported_as(path)) is not None:
        return Plugin(str(path), f"module {imported}", file_digest(path))
    name = f"lossbench_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    origin = f"plugin file {path}"

    def run() -> None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise

    _import(run, origin, where, path)
    return Plugin(str(path), origin, file_digest(path))


def _module_version(name: str) -> str:
    """``<package> <version>`` of the distribution that installed module ``name``, else its file's digest."""
    top = name.split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    if dists:
        return f"{dists[0]} {metadata.version(dists[0])}"
    file = getattr(sys.modules.get(name), "__file__", None)
    return file_digest(Path(file)) if file else "unknown"


def _load_module(name: str, where: str) -> Plugin:
    origin = f"plugin module {name}"
    if importlib.util.find_spec(name.split(".")[0]) is None:
        raise UserError(f"{where}{name}: no module of that name; install it, or give a .py file relative to the "
                        "config file")
    _import(lambda: importlib.import_module(name), origin, where)
    return Plugin(name, origin, _module_version(name))


def _entry_points() -> list[tuple[str, metadata.EntryPoint]]:
    """The installed entry points of the three groups, each once (a package on sys.path twice lists them twice)."""
    found: dict[tuple[str, str, str], tuple[str, metadata.EntryPoint]] = {}
    for group in GROUPS:
        for ep in metadata.entry_points(group=group):
            dist = ep.dist.name if ep.dist is not None else "?"
            found.setdefault((group, ep.name, dist), (group, ep))
    return list(found.values())


def load_entry_points() -> list[Plugin]:
    """Load every installed package's lossbench entry points (once per process and search path); what they
    brought."""
    global _scanned
    if _scanned == sys.path:
        return []
    brought = []
    for group, ep in _entry_points():
        dist = ep.dist.name if ep.dist is not None else "an unknown package"
        version = ep.dist.version if ep.dist is not None else "?"
        key = f"entry point {group} {ep.name} {dist}"
        if key in _loaded:
            continue
        origin = f"package {dist} {version}"
        where = f"entry point {ep.name} = {ep.value} in {group} (package {dist}): "
        _import(ep.load, origin, where)
        registry, _ = GROUPS[group]
        if ep.name not in registry or registry.origin(ep.name) != origin:
            raise UserError(f"{where}its module registered no {registry.kind} named {ep.name!r}; register it "
                            f"with the decorator under that name, or rename the entry point")
        _loaded[key] = Plugin(ep.value.partition(":")[0], origin, f"{dist} {version}")
        brought.append(_loaded[key])
    _scanned = list(sys.path)
    return brought


def load_plugins(names: Iterable[str] = (), where: str = "plugins") -> list[Plugin]:
    """Load the installed entry points, then each of ``names`` (module names, or ``.py`` files: absolute, or
    relative to the working folder; a config's ``plugins:`` are made absolute when it is read). ``where``
    starts each error line (``exp.yaml: plugins``). Loading a plugin twice does nothing the second time."""
    prefix = f"{where}: " if where else ""
    load_entry_points()
    for name in names:
        is_file = is_plugin_file(name)
        key = str(Path(name).resolve()) if is_file else name
        if key not in _loaded:
            _loaded[key] = _load_file(Path(key), prefix) if is_file else _load_module(name, prefix)
    return loaded_plugins()


def load_experiment_code(exp: Experiment) -> Experiment:
    """``exp`` once the code it names is there: its plugins loaded and its loss spec checked (a run calls this
    before reading any data, so a bad plugin or a typo in the loss stops it first)."""
    load_plugins(exp.plugins, exp.where("plugins"))
    check_spec(exp.loss, exp.where("loss"))
    return exp


def load_config_plugins(path: str | Path) -> list[Plugin]:
    """Load the entry points and the ``plugins:`` of every document of config file ``path``
    (``lossbench list --config``: what that config can name)."""
    names: list[str] = []
    for doc in read_documents(Path(path)):
        value = doc.get("plugins") or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{path}: plugins: must be a list of module names or .py files, got {value!r}")
        names += [v for v in value if v not in names]
    return load_plugins(names, f"{path}: plugins")
