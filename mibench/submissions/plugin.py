"""Checks of a ``contains: plugin`` submission against the plugin actually installed.

A plugin submission names a distribution, a namespaced method and (optionally) a version; its records are
produced by running that installed code. So the checker verifies what the records will be stamped with:

* the distribution is installed and declares the method's namespace in the ``mibench.plugins`` entry-point
  group (a namespace provided by some other package is refused);
* the installed version equals the card's ``version`` when it gives one;
* the namespace's package holds cards: code without any ``*.yaml`` card is what a non-editable install
  without a package-data rule leaves behind, reported as :class:`PluginWithoutCardsWarning`;
* the method exists and belongs to the card's track;
* a causal-track method's featurizer survives save -> load with the same outputs (built at a site of the
  card's first model, fitted and perturbed as training would change it), so state kept outside its
  tensors is caught before any record is written.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

from mibench.errors import MibenchError
from mibench.submissions.card import Problem, SubmissionCard

ENTRY_POINT_GROUP = "mibench.plugins"


class PluginWithoutCardsWarning(UserWarning):
    """A plugin namespace whose package has code but no method or task cards (``*.yaml``): usually a
    non-editable install that dropped its package data (see CONTRIBUTING: ``[tool.setuptools.package-data]``)."""


def cardless_namespace_warning(namespace: str, package: str) -> str | None:
    """The warning for plugin ``namespace`` (package ``package``) if it ships code but no cards, else None."""
    try:  # located, not imported (a plugin's code may import torch; `mibench ls` must stay light)
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    code = [p for root in roots for p in root.rglob("*.py") if p.name != "__init__.py"]
    cards = [p for root in roots for p in root.rglob("*.yaml")]
    if code and not cards:
        return (f"{PluginWithoutCardsWarning.__name__}: plugin namespace {namespace!r} (package {package}) has code "
                f"but no cards (*.yaml): was it installed without its package data? Add "
                '[tool.setuptools.package-data] "*" = ["*.yaml"] to its pyproject.toml and reinstall')
    return None


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def plugin_problems(card: SubmissionCard, card_file: str) -> tuple[list[Problem], list[str]]:
    """Problems and warnings of a plugin submission's ``plugin`` reference against what is installed."""
    assert card.plugin is not None
    plugin = card.plugin
    namespace = plugin.method.split(":")[0]
    try:
        dist = metadata.distribution(plugin.distribution)
    except metadata.PackageNotFoundError:
        return [Problem(card_file, "plugin.distribution", f"{plugin.distribution!r} is not installed; install it "
                        "(pip install <its source>) before checking or evaluating the submission")], []
    entries = [e for e in dist.entry_points if e.group == ENTRY_POINT_GROUP]
    provided = {e.name: e.value for e in entries}
    problems: list[Problem] = []
    if namespace not in provided:
        declared = ", ".join(sorted(provided)) or "none"
        problems.append(Problem(card_file, "plugin.distribution", f"{plugin.distribution!r} does not provide the "
                                f"namespace {namespace!r} of {plugin.method!r} (its {ENTRY_POINT_GROUP} entry "
                                f"points: {declared})"))
    if plugin.version is not None and plugin.version != dist.version:
        problems.append(Problem(card_file, "plugin.version", f"{plugin.version!r}, but the installed "
                                f"{plugin.distribution} is {dist.version!r}"))
    if problems:
        return problems, []
    warning = cardless_namespace_warning(namespace, provided[namespace])
    warnings = [f"{card_file}: plugin.method: {warning}"] if warning else []
    from mibench.method_registry import get_method_card

    try:
        method = get_method_card(plugin.method)
    except (MibenchError, KeyError) as exc:
        return [Problem(card_file, "plugin.method", str(exc).strip("'\""))], warnings
    if method.track != card.track:
        return [Problem(card_file, "plugin.method", f"{method.id} is a {method.track}-track method, but the card "
                        f"says track: {card.track}")], warnings
    if card.track == "causal":
        problems += _round_trip_problems(card, card_file)
    return problems, warnings


def _round_trip_problems(card: SubmissionCard, card_file: str) -> list[Problem]:
    """Build the method's intervention at one site, fit and perturb it, and round-trip it."""
    import torch

    from mibench.causal.method import Site, load_causal_method
    from mibench.causal.roundtrip import round_trip_difference
    from mibench.data.registry import get_card
    from mibench.submissions.models import resolve_model

    assert card.plugin is not None
    try:
        task = get_card(card.tasks[0])
        d_model = resolve_model(card.models[0]).layout.d_model
    except MibenchError:
        return []  # an unknown task or model is reported against the card already
    if task.causal is None:
        return []
    role = task.causal.positions[0]
    variable = (card.variables or {}).get(task.id, list(task.causal.variables))[0]
    try:
        method = load_causal_method(card.plugin.method, {})
        site = Site(layer=0, role=role, d_model=d_model, model_id=card.models[0], task=task.id, variable=variable)
        interchange = method.build(site)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            if interchange.learns_from_data:
                interchange.featurizer.fit(torch.randn(64, d_model, generator=generator))
            for parameter in interchange.parameters():  # as interchange training would move them
                if parameter.requires_grad and parameter.is_floating_point():
                    parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        difference = round_trip_difference(interchange, layer=0, role=role)
    except MibenchError as exc:
        return [Problem(card_file, "plugin.method", f"cannot be saved and loaded back: {exc}")]
    if difference is not None:
        return [Problem(card_file, "plugin.method", difference)]
    return []


def plugin_stamp(card: SubmissionCard):
    """What a plugin submission's records carry about the code that produced them."""
    from mibench.results.record import PluginStamp

    assert card.plugin is not None
    version = installed_version(card.plugin.distribution) or "unknown"
    return PluginStamp(distribution=card.plugin.distribution, version=version, method=card.plugin.method)
