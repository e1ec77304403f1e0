"""Which writing system the letters of a text belong to (a small Unicode script table)."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter

# (first code point, last code point, script), sorted; letters outside these are "Other".
_RANGES: list[tuple[int, int, str]] = sorted(
    [
        (0x0041, 0x024F, "Latin"),
        (0x1E00, 0x1EFF, "Latin"),
        (0xFF21, 0xFF5A, "Latin"),
        (0x0370, 0x03FF, "Greek"),
        (0x1F00, 0x1FFF, "Greek"),
        (0x0400, 0x052F, "Cyrillic"),
        (0x0530, 0x058F, "Armenian"),
        (0x0590, 0x05FF, "Hebrew"),
        (0x0600, 0x06FF, "Arabic"),
        (0x0750, 0x077F, "Arabic"),
        (0x08A0, 0x08FF, "Arabic"),
        (0xFB50, 0xFDFF, "Arabic"),
        (0xFE70, 0xFEFF, "Arabic"),
        (0x0900, 0x097F, "Devanagari"),
        (0x0980, 0x09FF, "Bengali"),
        (0x0A00, 0x0A7F, "Gurmukhi"),
        (0x0A80, 0x0AFF, "Gujarati"),
        (0x0B80, 0x0BFF, "Tamil"),
        (0x0C00, 0x0C7F, "Telugu"),
        (0x0C80, 0x0CFF, "Kannada"),
        (0x0D00, 0x0D7F, "Malayalam"),
        (0x0E00, 0x0E7F, "Thai"),
        (0x0E80, 0x0EFF, "Lao"),
        (0x10A0, 0x10FF, "Georgian"),
        (0x1100, 0x11FF, "Hangul"),
        (0x3130, 0x318F, "Hangul"),
        (0xAC00, 0xD7AF, "Hangul"),
        (0x1200, 0x139F, "Ethiopic"),
        (0x1780, 0x17FF, "Khmer"),
        (0x3040, 0x309F, "Hiragana"),
        (0x30A0, 0x30FF, "Katakana"),
        (0x31F0, 0x31FF, "Katakana"),
        (0xFF66, 0xFF9F, "Katakana"),
        (0x2E80, 0x2FDF, "Han"),
        (0x3005, 0x3007, "Han"),
        (0x3400, 0x4DBF, "Han"),
        (0x4E00, 0x9FFF, "Han"),
        (0xF900, 0xFAFF, "Han"),
        (0x20000, 0x3134F, "Han"),
    ]
)
_STARTS = [r[0] for r in _RANGES]


def script_of(char: str) -> str:
    code = ord(char)
    position = bisect_right(_STARTS, code) - 1
    if position >= 0:
        first, last, name = _RANGES[position]
        if first <= code <= last:
            return name
    return "Other"


def letter_scripts(text: str) -> Counter[str]:
    """Letters of ``text`` counted by script (digits, spaces and punctuation are not letters)."""
    return Counter(script_of(c) for c in text if c.isalpha())


def dominant_script(counts: Counter[str]) -> str:
    return counts.most_common(1)[0][0] if counts else "None"
