"""The documents in docs/ cannot fall behind the code: every route of the API is in
docs/api.md with each of its methods, docs/api.md names no route that does not exist,
its CloudEvents example runs as it says, the layering docs/architecture.md states
holds, and the README and docs link only to files inside the repository."""

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from organizations.models import Organization
from organizations.services import api_key_create
from tests.billing.conftest import running_lease
from tests.conftest import REPO

API_PREFIX = "api/v1/"
API_MD = REPO / "docs" / "api.md"
# The apps from the bottom up: each may import only the apps before it.
LAYERS = ["core", "organizations", "pools", "orbit", "vouchers", "marketplace", "billing", "settlements", "dashboards"]
# A route as docs/api.md writes it: `METHOD path`, the path relative to /api/v1/.
DOCUMENTED_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) ([a-z][a-z0-9_{}/.-]*)`")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCED_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", flags=re.MULTILINE | re.DOTALL)


def _route(pattern: Any) -> str:
    """A URL pattern's route with its converters written as OpenAPI does: ``{pool_id}``."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + _route(pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + _route(pattern), pattern.callback


def _methods(callback: Any) -> list[str]:
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    assert view_class is not None, f"{callback} is not a class-based view"
    return [
        method.upper()
        for method in view_class.http_method_names
        if method not in ("head", "options") and hasattr(view_class, method)
    ]


def api_routes() -> set[tuple[str, str]]:
    """Every (method, path relative to /api/v1/) the URL configuration serves."""
    routes = set()
    for path, callback in _walk(get_resolver().url_patterns):
        if path.startswith(API_PREFIX):
            routes |= {(method, path.removeprefix(API_PREFIX)) for method in _methods(callback)}
    return routes


def test_the_url_configuration_has_api_routes_to_check() -> None:
    # given the project's URLs / then the walk finds the API, with more than one method
    routes = api_routes()

    assert ("GET", "pools/{pool_id}/") in routes
    assert ("PATCH", "bank/") in routes
    assert ("DELETE", "api-keys/{key_id}/") in routes


def test_every_api_route_and_method_is_in_api_md() -> None:
    # given the routes the code serves and the API document
    text = API_MD.read_text()

    # when each is looked for as `METHOD path`
    missing = sorted(
        f"{method} /{API_PREFIX}{path}" for method, path in api_routes() if f"`{method} {path}`" not in text
    )

    # then none is missing
    assert not missing, "docs/api.md lacks these routes (write each as `METHOD path`):\n" + "\n".join(missing)


def test_api_md_names_only_routes_that_exist() -> None:
    # given the routes docs/api.md names
    named = set(DOCUMENTED_ROUTE.findall(API_MD.read_text()))

    # when they are compared with the routes the code serves
    unknown = sorted(f"{method} {path}" for method, path in named - api_routes())

    # then each exists
    assert not unknown, "docs/api.md names routes the code does not serve:\n" + "\n".join(unknown)


def _cloudevents_example() -> tuple[str, str]:
    """The Python example of ``POST usage-events/`` in docs/api.md, and the output it documents."""
    blocks = FENCED_BLOCK.findall(API_MD.read_text())
    index = next(i for i, (language, code) in enumerate(blocks) if language == "python" and "to_structured" in code)
    language, printed = blocks[index + 1]
    assert language == "", "the example's output follows it in a plain block"
    return blocks[index][1], printed


@pytest.mark.django_db(transaction=True)
def test_the_cloudevents_example_in_api_md_prints_what_it_documents(
    live_server: Any, buyer: Organization, provider: Organization, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a running 8-card lease, its provider's key and the service on a port
    lease = running_lease(buyer=buyer, provider=provider, cards=8)
    _, api_key = api_key_create(organization=provider, name="agent")
    code, documented = _cloudevents_example()

    # when the example runs as written, with those filled in
    example = {"base_url": live_server.url, "api_key": api_key, "lease_id": str(lease.pk), "__name__": "example"}
    exec(compile(code, "docs/api.md", "exec"), example)  # noqa: S102  the document's own example

    # then it prints what the document says it prints
    assert capsys.readouterr().out.splitlines() == documented.splitlines()


def _imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def test_apps_import_only_the_apps_below_them() -> None:
    # given every module of the apps, migrations included
    upward = []
    for rank, app in enumerate(LAYERS):
        for path in sorted((REPO / app).rglob("*.py")):
            # when its imports are read
            for line, module in _imported_modules(path):
                top = module.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > rank:
                    upward.append(f"{path.relative_to(REPO)}:{line} imports {module}")

    # then none reaches an app above its own (docs/architecture.md, "Apps and their layering")
    assert not upward, "imports go downward only:\n" + "\n".join(upward)


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings."""
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\s-]", "", heading.strip().lower().replace("`", ""))
        anchors.add(re.sub(r"\s", "-", slug))
    return anchors


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_and_docs_link_only_to_files_in_the_repository() -> None:
    # given the README and every document in docs/
    broken = []
    for document in _documents():
        text = document.read_text()
        if "../shared" in text:
            broken.append(f"{document.relative_to(REPO)} names ../shared, outside the repository")
        # when each relative link is followed
        for target in MARKDOWN_LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            # then it is a file of the repository, and its anchor a heading there
            if not linked.is_relative_to(REPO) or not linked.exists():
                broken.append(f"{document.relative_to(REPO)} links to {target}: no such file in the repository")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
                broken.append(f"{document.relative_to(REPO)} links to {target}: no such heading")

    assert not broken, "\n".join(broken)


def test_readme_links_the_architecture_and_the_api_contract() -> None:
    # given the README / then a newcomer finds the design in the repository
    links = MARKDOWN_LINK.findall((REPO / "README.md").read_text())

    assert "docs/architecture.md" in links
    assert "docs/api.md" in links
