"""The docs are kept honest by tests: every config key, CLI command and option, admin route,
error class and ``x-spendgate-*`` header is documented, the budget and limit guides exist,
are linked and open with a valid config, and the shipped example config loads."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner
from pydantic import BaseModel, PlainValidator

import spendgate.api.app  # noqa: F401  (registers every error class, AdminDisabled included)
from spendgate import dialects as surfaces
from spendgate import errors
from spendgate.api import admin
from spendgate.cli.main import LAZY, cli
from spendgate.config import Config, load_config, parse_config
from spendgate.config.schema import BudgetScope, RunawayConfig
from spendgate.dialects import SurfaceSpec
from spendgate.domain.fingerprint import ITEM_VOLATILE, VOLATILE
from spendgate.gateway import Gateway

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def read(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- config keys


def _nested(annotation: Any) -> Iterator[tuple[type[BaseModel], str]]:
    """The pydantic models inside an annotation, with the path suffix that leads to them:
    ``.<name>`` for a dict's values, ``[]`` for a list's items."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, ""
    elif origin is typing.Annotated:
        yield from _nested(args[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _nested(arg)
    elif origin is list:
        for model, suffix in _nested(args[0]):
            yield model, "[]" + suffix
    elif origin is dict:
        for model, suffix in _nested(args[1]):
            yield model, ".<name>" + suffix


def config_keys(
    model: type[BaseModel], prefix: str = ""
) -> Iterator[tuple[type[BaseModel], str, str]]:
    """(model class, field name, full dotted path) of every key, walked recursively."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield model, name, path
        # a field validated by a function of its own names the type it reads (budgets)
        read = [m.json_schema_input_type for m in field.metadata if isinstance(m, PlainValidator)]
        for nested, suffix in _nested(read[0] if read else field.annotation):
            yield from config_keys(nested, f"{path}{suffix}.")


def _documented_paths() -> dict[tuple[type[BaseModel], str], list[str]]:
    """A model used in several places (a price block) is documented once, at any of them."""
    paths: dict[tuple[type[BaseModel], str], list[str]] = {}
    for model, name, path in config_keys(Config):
        paths.setdefault((model, name), []).append(path)
    return paths


def test_the_walk_sees_nested_keys() -> None:
    found = {path for _, _, path in config_keys(Config)}
    assert "server.port" in found
    assert "providers.<name>.base_url" in found
    assert "models.<name>.deployments[].provider" in found
    assert "models.<name>.price.tiers[].rates.input" in found


@pytest.mark.parametrize(
    ("owner", "paths"),
    [(f"{model.__name__}.{name}", paths) for (model, name), paths in _documented_paths().items()],
)
def test_every_config_key_is_documented(owner: str, paths: list[str]) -> None:
    doc = read("docs/configuration.md")
    assert any(f"`{path}`" in doc for path in paths), (
        f"docs/configuration.md documents none of {paths} ({owner})"
    )


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("doc", ["README.md", "docs/configuration.md"])
def test_the_first_config_example_of_a_doc_is_valid(doc: str) -> None:
    blocks = _yaml_blocks(read(doc))
    assert blocks, f"{doc} has no ```yaml example"
    parse_config(yaml.safe_load(blocks[0]), doc)


def test_the_example_config_loads_and_checks_clean() -> None:
    path = ROOT / "examples" / "spendgate.yaml"
    config = load_config(path)
    assert {spec.kind.value for spec in config.providers.values()} == {
        "openai",
        "anthropic",
        "openai-compatible",
    }
    result = CliRunner().invoke(cli, ["check-config", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert "no price" not in result.output


# ---------------------------------------------------------------------------- CLI


def _commands(
    command: click.Command, path: tuple[str, ...] = ("spendgate",)
) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))


def _loaded(group: click.Group) -> click.Group:
    """The CLI with every lazy command imported (`spendgate.cli.main.LAZY`), so that the
    walk below sees them all, not only those some other test happened to load."""
    ctx = group.make_context("spendgate", ["--help"], resilient_parsing=True)
    for name in LAZY:
        group.get_command(ctx, name)
    return group


COMMANDS = dict(_commands(_loaded(cli)))


def _section(doc: str, command: str) -> str:
    """The text under the heading that names ``command``, up to the next heading."""
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("#") and f"`{command}`" in line:
            rest = lines[index + 1 :]
            end = next((i for i, text in enumerate(rest) if text.startswith("#")), len(rest))
            return "\n".join(rest[:end])
    raise AssertionError(f"docs/cli.md has no heading naming `{command}`")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_cli_command_and_option_is_documented(command: str) -> None:
    doc = read("docs/cli.md")
    section = _section(doc, command)
    for param in COMMANDS[command].params:
        if isinstance(param, click.Argument):
            assert (param.name or "").upper() in section, f"{command}: argument {param.name}"
            continue
        longest = max(param.opts, key=len)
        assert f"`{longest}" in section, f"{command}: option {longest} is not documented"


# ---------------------------------------------------------------------------- admin API


def _admin_routes() -> list[str]:
    app = web.Application()
    admin.add_routes(app, web.AppKey("gateway", Gateway))
    routes = []
    for route in app.router.routes():
        if route.method != "HEAD":
            routes.append(f"{route.method} {route.resource.canonical}")  # type: ignore[union-attr]
    return routes


@pytest.mark.parametrize("route", _admin_routes())
def test_every_admin_route_is_documented(route: str) -> None:
    assert f"`{route}`" in read("docs/admin-api.md"), f"docs/admin-api.md lacks `{route}`"


# ---------------------------------------------------------------------------- API surfaces


def _surfaces() -> list[SurfaceSpec]:
    return [value for value in vars(surfaces).values() if isinstance(value, SurfaceSpec)]


@pytest.mark.parametrize("spec", _surfaces(), ids=lambda spec: spec.path)
def test_every_api_surface_is_documented(spec: SurfaceSpec) -> None:
    architecture = read("docs/architecture.md")
    assert f"`POST {spec.path}`" in architecture
    assert f"`{spec.surface.value}`" in architecture
    assert f"`{spec.surface.value}`" in read("docs/storage.md")


# ---------------------------------------------------------------------------- errors


def _error_classes(base: type[errors.SpendgateError]) -> Iterator[type[errors.SpendgateError]]:
    for sub in base.__subclasses__():
        if not sub.__module__.startswith("spendgate."):
            continue
        if sub.__name__.startswith("_"):  # private refinements, e.g. the internal 500
            yield from _error_classes(sub)
            continue
        yield sub
        yield from _error_classes(sub)


@pytest.mark.parametrize(
    "error", sorted({e.__name__ for e in _error_classes(errors.SpendgateError)})
)
def test_every_error_class_is_documented(error: str) -> None:
    assert f"`{error}`" in read("docs/errors.md"), f"docs/errors.md lacks `{error}`"


# ---------------------------------------------------------------------------- README


def test_readme_starts_with_the_two_commands() -> None:
    head = "\n".join(read("README.md").splitlines()[:15])
    assert "make demo" in head
    assert "make check" in head


def test_readme_links_resolve() -> None:
    readme = read("README.md")
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", readme):
        assert (ROOT / target).exists(), f"README.md links to a missing {target}"


# ---------------------------------------------------------------------------- budgets and limits

GUIDES = ("docs/budgets.md", "docs/limits.md")


@pytest.mark.parametrize("guide", GUIDES)
def test_the_budget_and_limit_guides_exist_and_are_linked(guide: str) -> None:
    assert (ROOT / guide).is_file(), f"{guide} is missing"
    name = guide.removeprefix("docs/")
    assert f"]({guide})" in read("README.md"), f"README.md does not link {guide}"
    assert f"]({name}" in read("docs/configuration.md"), f"configuration.md does not link {name}"


@pytest.mark.parametrize("guide", GUIDES)
def test_the_first_config_example_of_a_guide_is_valid(guide: str) -> None:
    blocks = _yaml_blocks(read(guide))
    assert blocks, f"{guide} has no ```yaml example"
    parse_config(yaml.safe_load(blocks[0]), guide)


def test_every_scope_is_explained_in_the_budget_guide() -> None:
    guide = read("docs/budgets.md")
    for scope in BudgetScope:
        assert f"| `{scope.value}` |" in guide, f"docs/budgets.md: scope {scope.value}"


def test_the_limit_guide_names_what_loop_detection_ignores_and_where_sessions_come_from() -> None:
    guide = read("docs/limits.md")
    for name in sorted(VOLATILE | ITEM_VOLATILE):
        assert f"`{name}`" in guide, f"docs/limits.md: volatile field {name}"
    for header in RunawayConfig().session_headers:
        assert f"`{header}`" in guide, f"docs/limits.md: session header {header}"


def _spendgate_headers() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "src" / "spendgate").rglob("*.py"):
        found.update(re.findall(r"x-spendgate-[a-z]+(?:-[a-z]+)*", path.read_text("utf-8")))
    return found


def test_the_walk_finds_spendgate_headers() -> None:
    assert {"x-spendgate-budget", "x-spendgate-output-clamped"} <= _spendgate_headers()


@pytest.mark.parametrize("header", sorted(_spendgate_headers()))
def test_every_spendgate_header_is_documented(header: str) -> None:
    docs = "\n".join(path.read_text("utf-8") for path in DOCS.glob("*.md"))
    assert f"`{header}" in docs, f"no doc under docs/ names the header {header}"


# ---------------------------------------------------------------------------- links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    found, in_code = set(), False
    for line in path.read_text("utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(_slug(line.lstrip("#")))
    return found


MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda path: path.name)
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text("utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        name, _, anchor = target.partition("#")
        dest = (doc.parent / name).resolve() if name else doc
        assert dest.exists(), f"{doc.name}: link to a missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{doc.name}: no heading for {target}"
