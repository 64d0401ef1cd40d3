"""Text clean-up shared by readers: the legacy MELD bytes and other mojibake must not reach a tokenizer."""

from __future__ import annotations

import re
import unicodedata

_C1 = re.compile("[\u0080-\u009f]")
_MOJIBAKE = re.compile("Â|â€")
# What a cp1252 byte 0x80-0xBF looks like once decoded: Latin-1 range plus cp1252's extra glyphs.
_CP1252_TAIL = "[\u00a0-\u00bf\u2013-\u203a\u20ac\u2122\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc]"
_STRAY_A = re.compile("Â(?=" + _CP1252_TAIL + ")")


def _c1_to_cp1252(match: re.Match) -> str:
    char = match.group()
    try:
        return char.encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d have no cp1252 character
        return ""


def fix_text(text: str) -> str:
    """Map legacy cp1252 code points and their mojibake back to the characters they stood for.

    MELD's pre-2020 CSVs store ’ as U+0092 (bytes C2 92); read as cp1252 elsewhere it shows as ``Â’``.
    Both forms, and a non-breaking space, become what the corrected 2020 files hold.
    """
    if _MOJIBAKE.search(text):
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            text = _STRAY_A.sub("", text)
    text = _C1.sub(_c1_to_cp1252, text)
    text = text.replace("\u00a0", " ")
    return unicodedata.normalize("NFC", text).strip()


def is_valid_unicode(text: str) -> bool:
    """False for a str holding lone surrogates (``"\\udcff"``), which Python makes of undecodable bytes and no
    tokenizer accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
