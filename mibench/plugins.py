"""Plugin discovery: third-party packages add methods, featurizers and tasks through one entry-point group.

A plugin distribution declares, in its ``pyproject.toml``::

    [project.entry-points."mibench.plugins"]
    myplugin = "my_package"

The entry point's *name* becomes the plugin's namespace and its value names a package that is laid out
like mibench's own ``methods/`` and ``tasks/`` folders: one sub-folder per method with its YAML card(s),
one sub-folder per task with its ``card.yaml``. Cards are read without importing the code, so listing
stays fast (keep the package's ``__init__`` light: it is imported to locate the folder). Every plugin
item is namespaced, ``myplugin:my-method``, and its class registers under that full name with the same
decorators built-ins use. A plugin cannot shadow a built-in: built-in names have no namespace, and only
code inside ``mibench`` may register an un-namespaced name. :mod:`mibench.registry` applies these rules to
every kind of item (its card catalogs read the plugin folders found here).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from mibench.errors import MibenchError

ENTRY_POINT_GROUP = "mibench.plugins"
NAMESPACE_PATTERN = re.compile(r"[a-z][a-z0-9_\-]*")
RESERVED_NAMESPACES = {"mibench", "builtin", "file"}


class PluginError(MibenchError):
    """A plugin that cannot be used; the message names the plugin and what is wrong."""


@dataclass(frozen=True)
class PluginSource:
    namespace: str
    package: str
    distribution: str | None


def plugin_sources() -> list[PluginSource]:
    """Installed plugins, sorted by namespace; a malformed or duplicated namespace is an error."""
    sources: dict[str, PluginSource] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        namespace = entry.name
        if not NAMESPACE_PATTERN.fullmatch(namespace) or namespace in RESERVED_NAMESPACES:
            raise PluginError(f"plugin entry point {namespace!r} ({entry.value}): the name must be a lower-case "
                              f"word and not one of {sorted(RESERVED_NAMESPACES)}")
        dist = entry.dist.name if entry.dist is not None else None
        if namespace in sources and sources[namespace].package != entry.value:
            raise PluginError(f"two plugins claim the namespace {namespace!r}: {sources[namespace].package} "
                              f"and {entry.value}")
        sources[namespace] = PluginSource(namespace, entry.value, dist)
    return [sources[k] for k in sorted(sources)]


def card_files(package: str, pattern: str) -> Iterator[Path]:
    """Files matching ``pattern`` in the immediate sub-folders of ``package`` (sorted)."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise PluginError(f"plugin package {package!r} cannot be imported: {exc}") from exc
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if folder.is_dir():
            yield from sorted(Path(str(folder)).glob(pattern))


def qualified(namespace: str | None, name: str) -> str:
    """``ns:name`` for a plugin item (a card may already carry its own namespace), ``name`` for a built-in."""
    if namespace is None:
        return name
    if ":" in name:
        if not name.startswith(namespace + ":"):
            raise PluginError(f"plugin {namespace!r} declares {name!r}, which is outside its namespace")
        return name
    return f"{namespace}:{name}"


def check_registration(name: str, cls: type) -> None:
    """Only mibench's own code registers un-namespaced (built-in) names."""
    if ":" not in name and not cls.__module__.startswith("mibench."):
        raise PluginError(f"{cls.__module__}.{cls.__qualname__} registers {name!r} without a namespace; plugins "
                          "register 'namespace:name' (built-in names are reserved)")
