"""The Simplified Chinese catalog (locale/zh_Hans/LC_MESSAGES/django.po) as the tests read it: its
entries, and the English text on a page that one of them should have translated.

No gettext tools are needed: the .po file is read here, the committed .mo by Python's gettext."""

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from tests.conftest import REPO

PO = REPO / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
_FIELD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?) (".*")$')
PLACEHOLDER = re.compile(r"%\(\w+\)[sdr]|\{\w*\}")


@dataclass(frozen=True)
class Entry:
    context: str
    msgid: str
    plural: str
    msgstr: str  # the singular's, or for a plural the first (Chinese has one form)
    fuzzy: bool

    @property
    def translated(self) -> bool:
        return bool(self.msgstr) and not self.fuzzy


def entries() -> list[Entry]:
    found = []
    for block in PO.read_text().strip().split("\n\n"):
        fields: dict[str, str] = {}
        current = ""
        fuzzy = False
        for line in block.splitlines():
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            match = _FIELD.match(line)
            if match:
                current = match[1]
                fields[current] = json.loads(match[2])
            elif line.startswith('"'):
                fields[current] += json.loads(line)
        if fields.get("msgid"):
            found.append(
                Entry(
                    context=fields.get("msgctxt", ""),
                    msgid=fields["msgid"],
                    plural=fields.get("msgid_plural", ""),
                    msgstr=fields.get("msgstr", fields.get("msgstr[0]", "")),
                    fuzzy=fuzzy,
                )
            )
    return found


class _Text(HTMLParser):
    """A page's text as a reader meets it: its text nodes (not scripts' or styles') and the
    attributes read out (titles, labels, placeholders, alternatives), each whitespace-collapsed."""

    READ = {"title", "aria-label", "placeholder", "alt"}

    def __init__(self) -> None:
        super().__init__()
        self.segments: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        self.segments += [" ".join(value.split()) for name, value in attrs if name in self.READ and value]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.segments.append(" ".join(data.split()))


def page_text(html: str) -> list[str]:
    parser = _Text()
    parser.feed(html)
    return parser.segments


def _pattern(fragment: str) -> re.Pattern[str]:
    parts = PLACEHOLDER.split(fragment)
    body = ".+?".join(re.escape(part) for part in parts)
    # Whole words: a message's word inside a path or a name (/api/v1/invoices/, invoice_id) is not it.
    return re.compile(rf"(?<![\w/.-]){body}(?![\w/-])")


def untranslated_on(segments: list[str], *, data: list[str] = (), skip_contexts: tuple[str, ...] = ()) -> list[str]:
    """The catalog's English messages (their parts between HTML tags) that still stand in
    ``segments``, a Chinese page's text. ``data`` (names the test gave organizations, pools and
    programs) is taken out first; a part kept as it is in the translation (a path, a command) is
    not looked for."""
    # A PDF's table cuts a long name to fit its column: a cut name is a name too.
    text = [segment for segment in segments if not any(len(segment) > 8 and name.startswith(segment) for name in data)]
    for name in sorted(data, key=len, reverse=True):
        text = [segment.replace(name, " ") for segment in text]
    left = []
    for entry in entries():
        if entry.context in skip_contexts or not entry.translated or entry.msgstr == entry.msgid:
            continue
        for source in filter(None, (entry.msgid, entry.plural)):
            for fragment in re.split(r"<[^>]+>", source):
                fragment = " ".join(fragment.split()).strip(" .:;,()·")
                literal = PLACEHOLDER.sub("", fragment)
                if not re.search(r"[A-Za-z]{2,}", literal) or fragment in entry.msgstr:
                    continue
                pattern = _pattern(fragment)
                hits = [segment for segment in text if pattern.search(segment)]
                if hits:
                    left.append(f"{source!r} in {hits[0]!r}")
                    break
    return sorted(set(left))
