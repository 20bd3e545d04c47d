"""The text a PDF made by fpdf2 draws, read back through the font's ToUnicode map.

The PDFs embed one CJK font (dashboards.pdf): each string shown (``(...) Tj``) is a run of two-byte
glyph ids, and the font's ToUnicode CMap (``bfchar`` and ``bfrange`` entries) maps them to text.
One line of the result per string shown."""

import re
import zlib

_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"(": b"(", b")": b")", b"\\": b"\\"}


def _streams(content: bytes) -> list[bytes]:
    """Each stream, its exact ``/Length`` of bytes (a font's bytes may hold "endstream"), inflated."""
    found = []
    for match in re.finditer(rb"<<((?:(?!>>\s*stream).)*?)>>\s*stream\r?\n", content, re.S):
        length = re.search(rb"/Length (\d+)", match[1])
        if length is None:
            continue
        raw = content[match.end() : match.end() + int(length[1])]
        found.append(zlib.decompress(raw) if b"/FlateDecode" in match[1] else raw)
    return found


def _unicode_map(streams: list[bytes]) -> dict[int, str]:
    mapping: dict[int, str] = {}
    for stream in streams:
        if b"begincmap" not in stream:
            continue
        text = stream.decode("latin-1")
        for block in re.findall(r"beginbfchar(.*?)endbfchar", text, re.S):
            for glyph, code in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                mapping[int(glyph, 16)] = bytes.fromhex(code).decode("utf-16-be")
        for block in re.findall(r"beginbfrange(.*?)endbfrange", text, re.S):
            for low, high, code in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                start = int(code, 16)
                for offset, glyph in enumerate(range(int(low, 16), int(high, 16) + 1)):
                    mapping[glyph] = chr(start + offset)
    return mapping


def _unescape(raw: bytes) -> bytes:
    out, index = bytearray(), 0
    while index < len(raw):
        byte = raw[index : index + 1]
        if byte != b"\\":
            out += byte
            index += 1
            continue
        following = raw[index + 1 : index + 2]
        octal = re.match(rb"[0-7]{1,3}", raw[index + 1 : index + 4])
        if octal:
            out.append(int(octal.group(), 8) & 0xFF)
            index += 1 + len(octal.group())
        else:
            out += _ESCAPES.get(following, following)
            index += 2
    return bytes(out)


def pdf_text(content: bytes) -> str:
    streams = _streams(content)
    mapping = _unicode_map(streams)
    assert mapping, "no ToUnicode map: the PDF does not embed the CJK font"
    lines = []
    for stream in streams:
        if b"Tj" not in stream or b"begincmap" in stream:
            continue
        for raw in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", stream, re.S):
            glyphs = _unescape(raw)
            lines.append(
                "".join(mapping.get(int.from_bytes(glyphs[i : i + 2], "big"), "?") for i in range(0, len(glyphs), 2))
            )
    return "\n".join(lines)
