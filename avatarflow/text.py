"""Text people type (review notes, prompts): stored without characters that disguise it.

Bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069) make "cod.exe" display as
something else and reverse whatever follows them on a page; control characters (NUL, escapes)
break terminals, logs and PostgreSQL text. Both are removed; newlines and tabs stay.
"""

from __future__ import annotations

import unicodedata

_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}
_KEPT = {"\n", "\t"}


def clean_text(text: str) -> str:
    """`text` without bidi controls and control characters (category Cc), newlines and tabs kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in text if ch in _KEPT or (ch not in _BIDI_CONTROLS
                                                         and unicodedata.category(ch) != "Cc"))
