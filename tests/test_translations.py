"""Every message the code and the templates mark for translation has its Simplified Chinese in the
catalog, and the committed django.mo is the compiled django.po.

Read without gettext tools: the templates through Django's own template parser, the code through
Python's ``ast``. A message added without its translation fails here, with the list: run
``make messages`` (it needs GNU gettext), translate each empty ``msgstr`` in
locale/zh_Hans/LC_MESSAGES/django.po, then ``make compile-messages`` and commit both files."""

import ast
import gettext
import re
from collections.abc import Iterator
from pathlib import Path

from django.template import engines
from django.templatetags.i18n import BlockTranslateNode, TranslateNode
from django.utils.translation import trim_whitespace

from tests.catalog import MO, PLACEHOLDER, entries
from tests.conftest import REPO

APPS = ["core", "organizations", "pools", "orbit", "vouchers", "marketplace", "billing", "settlements", "dashboards"]
CALLS = {
    "gettext": (None, 0),
    "gettext_lazy": (None, 0),
    "gettext_noop": (None, 0),
    "_": (None, 0),
    "ngettext": (None, 0),
    "ngettext_lazy": (None, 0),
    "pgettext": (0, 1),
    "pgettext_lazy": (0, 1),
    "npgettext": (0, 1),
    "npgettext_lazy": (0, 1),
}

Key = tuple[str, str]  # (context, msgid)


def _python_messages(path: Path) -> Iterator[Key]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            name = function.attr if function.value.id == "translation" else ""  # translation.gettext(...)
        else:
            name = function.id if isinstance(function, ast.Name) else ""
        if name not in CALLS:
            continue
        context_at, msgid_at = CALLS[name]
        args = [
            arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None for arg in node.args
        ]
        if len(args) > msgid_at and args[msgid_at] is not None:
            yield (args[context_at] or "") if context_at is not None else "", args[msgid_at]  # type: ignore[misc]


def _template_messages(path: Path) -> Iterator[Key]:
    source = path.read_text()
    template = engines["django"].from_string(source)  # type: ignore[attr-defined]
    for node in template.template.nodelist.get_nodes_by_type(TranslateNode):
        literal = getattr(node.filter_expression.var, "literal", None)
        if isinstance(literal, str) and not node.noop:
            yield _context(node), literal
    for node in template.template.nodelist.get_nodes_by_type(BlockTranslateNode):
        singular, _ = node.render_token_list(node.singular)
        yield _context(node), trim_whitespace(singular) if node.trimmed else singular
    for literal in re.findall(r'\b_\("([^"]+)"\)', source):  # a filter's argument: default:_("draft")
        yield "", literal


def _context(node: TranslateNode | BlockTranslateNode) -> str:
    context = node.message_context
    return str(context.var) if context is not None else ""


def marked_messages() -> set[Key]:
    found: set[Key] = set()
    for app in APPS:
        for path in (REPO / app).rglob("*.py"):
            if "migrations" not in path.parts and "management" not in path.parts:
                found.update(_python_messages(path))
        for path in (REPO / app).rglob("templates/**/*.html"):
            found.update(_template_messages(path))
    return found


def test_every_marked_message_has_its_chinese_translation_in_the_catalog() -> None:
    catalog = {(entry.context, entry.msgid): entry for entry in entries()}

    marked = marked_messages()
    missing = sorted(key for key in marked if key not in catalog or not catalog[key].translated)

    assert len(marked) > 500  # the pages, PDFs, reports and error messages are all found
    assert not missing, "translate these (make messages, then fill msgstr; see README): " + "".join(
        f"\n  {context + ': ' if context else ''}{msgid!r}" for context, msgid in missing
    )


def test_each_translation_keeps_its_messages_placeholders_and_markup() -> None:
    wrong = [
        entry.msgid
        for entry in entries()
        if entry.translated
        and (
            sorted(PLACEHOLDER.findall(entry.msgstr)) != sorted(PLACEHOLDER.findall(entry.plural or entry.msgid))
            or sorted(re.findall(r"</?\w+", entry.msgstr)) != sorted(re.findall(r"</?\w+", entry.msgid))
        )
    ]

    assert not wrong


def test_the_committed_mo_is_the_compiled_po() -> None:
    with MO.open("rb") as compiled:
        catalog = gettext.GNUTranslations(compiled)

    stale = []
    for entry in entries():
        if not entry.translated:
            continue
        if entry.plural:
            shown = catalog.npgettext(entry.context, entry.msgid, entry.plural, 1) if entry.context else None
            shown = shown or catalog.ngettext(entry.msgid, entry.plural, 1)
        else:
            shown = catalog.pgettext(entry.context, entry.msgid) if entry.context else catalog.gettext(entry.msgid)
        if shown != entry.msgstr:
            stale.append(entry.msgid)

    assert not stale, f"run make compile-messages: {stale[:10]}"
