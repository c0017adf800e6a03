"""The generic registry (names, namespaces, suggestions, lazy entries, plugin cards) and the one card loader."""

from __future__ import annotations

import pickle
import sys
import textwrap
from importlib import metadata

import pytest
from pydantic import BaseModel, ConfigDict, Field

from mibench.plugins import PluginError
from mibench.registry import CardCatalog, DuplicateNameError, NotRegisteredError, Registry, UnknownItemError
from mibench.validation import CardError, Problem, read_card


def _builtin(name: str) -> type:
    """A class that looks like mibench's own code (only that may register a bare name)."""
    return type(name, (), {"__module__": "mibench.somewhere"})


# ------------------------------------------------------------------------------------------- registering
def test_decorator_registers_and_sets_the_name_attribute():
    widgets: Registry[type] = Registry("widget", decorator="register_widget", name_attribute="widget_id")
    cls = widgets.register("spanner", "wrench")(_builtin("Spanner"))
    assert widgets.get("spanner") is cls and widgets.get("wrench") is cls
    assert widgets.names() == ["spanner", "wrench"] and "spanner" in widgets and "hammer" not in widgets
    widgets.register("spanner")(cls)  # the same class again (a module imported twice) is fine


def test_a_name_has_one_owner():
    widgets: Registry[type] = Registry("widget", decorator="register_widget")
    widgets.register("spanner")(_builtin("Spanner"))
    with pytest.raises(DuplicateNameError, match=r"widget 'spanner' is already registered by mibench\.somewhere\.Spanner"):
        widgets.register("spanner")(_builtin("Impostor"))
    assert isinstance(DuplicateNameError("x"), ValueError)  # generic `except ValueError` keeps working


def test_plugins_register_namespaced_names_only():
    class Outside:  # defined in a test module, i.e. outside mibench
        pass

    widgets: Registry[type] = Registry("widget", decorator="register_widget")
    with pytest.raises(PluginError, match="without a namespace"):
        widgets.register("spanner")(Outside)
    widgets.register("acme:spanner")(Outside)
    assert widgets.get("acme:spanner") is Outside and "spanner" not in widgets


class UnknownWidgetError(UnknownItemError):
    pass


def test_unknown_names_get_suggestions_and_the_known_list():
    widgets: Registry[type] = Registry("widget", decorator="register_widget", error=UnknownWidgetError)
    for name in ("spanner", "spinner", "hammer"):
        widgets.register(name)(_builtin(name.title()))
    with pytest.raises(UnknownWidgetError) as info:
        widgets.get("spaner")
    assert str(info.value) == ("unknown widget 'spaner'; did you mean 'spanner' or 'spinner'? "
                               "(known: hammer, spanner, spinner)")
    assert isinstance(info.value, KeyError) and info.value.suggestions == ["spanner", "spinner"]
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)
    with pytest.raises(UnknownWidgetError, match=r"unknown widget 'saw' \(known: hammer"):
        widgets.get("saw")  # nothing close: no suggestion


def test_kinds_do_not_leak_into_each_other():
    featurizers: Registry[type] = Registry("featurizer", decorator="register_featurizer")
    methods: Registry[type] = Registry("method", decorator="register_method")
    featurizers.register("pca")(_builtin("PCA"))
    with pytest.raises(UnknownItemError, match="unknown method 'pca'"):
        methods.get("pca")
    assert methods.names() == []


def test_the_real_kinds_are_separate_registries():
    """``pca`` is both a featurizer class and a causal method; each registry finds its own."""
    from mibench.causal.featurizer import FEATURIZERS, SELECTIONS, PCAFeaturizer, featurizer_class
    from mibench.method_registry import method_class

    assert featurizer_class("pca") is PCAFeaturizer
    assert method_class("pca") is not PCAFeaturizer and method_class("pca").__module__.startswith("mibench.methods")
    assert featurizer_class("sae").__module__ == "mibench.causal.sae"  # declared, imported on first use
    with pytest.raises(DuplicateNameError):  # selections now have the duplicate check too
        SELECTIONS.register("all")(_builtin("OtherAll"))
    assert "all" not in FEATURIZERS


def test_every_supported_model_type_has_its_adapter():
    from mibench.models.adapter import ADAPTERS, ModelAdapter
    from mibench.models.families import FAMILIES

    model_types = [t for family in FAMILIES for t in family.model_types]
    assert ADAPTERS.names() == sorted(model_types)
    for model_type in model_types:
        assert issubclass(ADAPTERS.get(model_type), ModelAdapter)
        assert ADAPTERS.get(model_type).family == model_type


# ------------------------------------------------------------------------------------------- lazy entries
@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """Write a throw-away package ``{relative path: source}`` on sys.path; its modules are unloaded after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[str] = []

    def make(name: str, files: dict[str, str]) -> None:
        made.append(name)
        for relative, text in {"__init__.py": "", **files}.items():
            path = tmp_path / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))

    yield make
    for module in [m for m in sys.modules if m.split(".")[0] in made]:
        del sys.modules[module]


def test_declared_entries_are_imported_on_first_use_and_must_register(make_package):
    make_package("lazy_widgets", {
        "host.py": """
            from mibench.registry import Registry
            DECLARED = {"acme:gadget": "lazy_widgets.impl:Gadget", "acme:unregistered": "lazy_widgets.impl:Plain",
                        "acme:nowhere": "lazy_widgets.missing:Gadget", "acme:typo": "lazy_widgets.impl:Gadjet"}
            WIDGETS = Registry("widget", decorator="register_widget", declared=lambda: DECLARED)
        """,
        "impl.py": """
            from lazy_widgets.host import WIDGETS

            @WIDGETS.register("acme:gadget")
            class Gadget:
                pass

            class Plain:
                pass
        """,
    })
    from lazy_widgets.host import WIDGETS

    assert "acme:gadget" in WIDGETS and "lazy_widgets.impl" not in sys.modules  # known, not imported
    assert WIDGETS.get("acme:gadget") is sys.modules["lazy_widgets.impl"].Gadget
    with pytest.raises(NotRegisteredError, match=r"decorate it with @register_widget\('acme:unregistered'\)"):
        WIDGETS.get("acme:unregistered")
    with pytest.raises(Exception, match="cannot import lazy_widgets.missing") as info:
        WIDGETS.get("acme:nowhere")
    assert not isinstance(info.value, ImportError)  # a user error, not a traceback
    with pytest.raises(Exception, match="has no attribute 'Gadjet'"):
        WIDGETS.get("acme:typo")


def test_discover_imports_what_registers_an_undeclared_name():
    calls: list[str] = []

    def discover(name: str) -> None:
        calls.append(name)
        if name == "acme:late":
            widgets.register(name)(_builtin("Late"))

    widgets: Registry[type] = Registry("widget", decorator="register_widget", discover=discover)
    assert widgets.get("acme:late").__name__ == "Late"
    assert widgets.get("acme:late").__name__ == "Late" and calls == ["acme:late"]  # only when missing
    with pytest.raises(UnknownItemError):
        widgets.get("acme:never")


# ----------------------------------------------------------------------------- plugin cards (entry points)
class WidgetCard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    entry: str


def _load_widget_card(path) -> WidgetCard:
    return read_card(path, WidgetCard)


def test_plugin_cards_are_found_through_the_entry_point_and_namespaced(make_package, monkeypatch):
    card = "id: {id}\nentry: {entry}\n"
    make_package("builtin_widgets", {"alpha/widget.yaml": card.format(id="alpha", entry="builtin_widgets.a:A"),
                                     "alpha/notes.yaml": "not: a card"})
    make_package("acme_widgets", {
        # a plugin's bare id is its own namespace's: it cannot shadow the built-in 'alpha'
        "alpha/widget.yaml": card.format(id="alpha", entry="acme_widgets.alpha.impl:Alpha"),
        "alpha/impl.py": """
            import acme_widgets
            @acme_widgets.WIDGETS.register("acme:alpha")
            class Alpha:
                pass
        """,
        "beta/widget.yaml": card.format(id="acme:beta", entry="acme_widgets.alpha.impl:Alpha"),
    })

    class FakeEntryPoint:  # what importlib.metadata returns for an installed plugin distribution
        name, value, dist = "acme", "acme_widgets", None

    monkeypatch.setattr(metadata, "entry_points", lambda group: [FakeEntryPoint()] if group == "mibench.plugins" else [])
    catalog = CardCatalog("widget", "builtin_widgets", "widget.yaml", _load_widget_card)
    assert [c.id for c in catalog.cards()] == ["alpha", "acme:alpha", "acme:beta"]
    assert catalog.get("acme:alpha").entry == "acme_widgets.alpha.impl:Alpha"
    assert catalog.path("alpha").parent.parent.name == "builtin_widgets"
    assert "acme_widgets.alpha.impl" not in sys.modules  # cards are read without importing code
    with pytest.raises(UnknownItemError, match="did you mean 'acme:beta'"):
        catalog.get("acme:beat")

    import acme_widgets

    acme_widgets.WIDGETS = Registry("widget", decorator="register_widget", declared=catalog.entries)
    assert acme_widgets.WIDGETS.get("acme:alpha").__name__ == "Alpha"
    with pytest.raises(NotRegisteredError):  # acme:beta's entry registers another name
        acme_widgets.WIDGETS.get("acme:beta")


def test_a_plugin_card_outside_its_namespace_is_refused(make_package, monkeypatch):
    make_package("rogue_widgets", {"x/widget.yaml": "id: 'other:x'\nentry: rogue_widgets.x:X\n"})

    class FakeEntryPoint:
        name, value, dist = "rogue", "rogue_widgets", None

    monkeypatch.setattr(metadata, "entry_points", lambda group: [FakeEntryPoint()])
    make_package("empty_widgets", {})
    with pytest.raises(PluginError, match="outside its namespace"):
        CardCatalog("widget", "empty_widgets", "widget.yaml", _load_widget_card).cards()


# ------------------------------------------------------------------------------------------ the card loader
class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    colour: str
    size: int = 1


class ToyCard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    count: int
    inner: Inner | None = None
    tags: list[int] = Field(default_factory=list)
    roles: dict[str, str] = Field(default_factory=dict, alias="schema")


class ToyCardError(CardError):
    pass


def _problems(tmp_path, text: str, **kwargs) -> list[Problem]:
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    with pytest.raises(ToyCardError) as info:
        read_card(path, ToyCard, error=ToyCardError, **kwargs)
    return info.value.problems


def test_a_valid_card_loads(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("name: a\ncount: 2\ninner: {colour: red}\nschema: {END: last}\n")
    card = read_card(path, ToyCard)
    assert (card.count, card.inner.colour, card.roles) == (2, "red", {"END": "last"})


@pytest.mark.parametrize("text, field, message", [
    ("name: a\ncount: [unclosed", None, "not valid YAML"),
    ("- just\n- a list\n", None, "expected a mapping of fields (name, count, ...) at the top level"),
    ("name: a\ncount: many\n", "count", "Input should be a valid integer"),
    ("count: 2\n", "name", "Field required"),
    ("name: a\ncount: 2\ntags: [1, two]\n", "tags[1]", "Input should be a valid integer"),
    ("name: a\ncount: 2\ncolour: blue\n", "colour", "unknown field (allowed: name, count, inner, tags, schema)"),
    ("name: a\ncount: 2\ninner: {colour: red, hue: 3}\n", "inner.hue", "unknown field (allowed: colour, size)"),
])
def test_card_problems_name_the_file_and_the_field(tmp_path, text, field, message):
    (problem,) = _problems(tmp_path, text)
    assert problem.file == str(tmp_path / "toy.yaml") and problem.field == field
    assert message in problem.message
    expected = f"{tmp_path / 'toy.yaml'}: {field}: " if field else f"{tmp_path / 'toy.yaml'}: "
    assert str(problem).startswith(expected)


def test_every_problem_is_reported_at_once_and_the_error_pickles(tmp_path):
    problems = _problems(tmp_path, "count: many\nextra: 1\n")
    assert {p.field for p in problems} == {"name", "count", "extra"}
    error = ToyCardError(problems)
    assert str(error) == "; ".join(str(p) for p in problems)
    assert pickle.loads(pickle.dumps(error)).problems == problems


def test_a_missing_card_says_so(tmp_path):
    with pytest.raises(CardError, match="toy.yaml: every folder needs one"):
        read_card(tmp_path / "toy.yaml", ToyCard, missing="every folder needs one")


def test_task_and_method_cards_share_the_loader(tmp_path):
    from mibench.data.card import TaskCardError, load_card
    from mibench.method_registry import MethodCardError, load_method_card

    method = tmp_path / "method.yaml"
    method.write_text("id: toy\nname: Toy\ntrack: circuit\ndescription: d\nentry: a.b:C\nlevels: [edge, graph]\n")
    with pytest.raises(MethodCardError) as info:
        load_method_card(method)
    assert str(info.value).startswith(f"{method}: levels[1]: Input should be")
    task = tmp_path / "card.yaml"
    task.write_text("id: toy\n")
    with pytest.raises(TaskCardError) as task_info:
        load_card(task)
    assert isinstance(task_info.value, CardError) and f"{task}: version: Field required" in str(task_info.value)
