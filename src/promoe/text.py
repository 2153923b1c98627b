"""The one form names and text take once read: Unicode NFC, invisible characters trimmed from both ends.

Task names, instance ids and Definitions (and ``promoe predict --definition / --input``) pass through
:func:`clean` where they are read — task files and packages (:mod:`promoe.data.schema`,
:mod:`promoe.data.sources`), split lists, the paraphrase package, cluster files, predictions and references
(:mod:`promoe.io`) — and are compared only in that form: a training task named ``"task_x\\n"`` is the test task
``task_x``, and an id written in another Unicode normal form is the same id. Nothing inside a text changes
beyond NFC.

*Invisible* (:func:`visible`): whitespace, control characters, format characters (zero-width space and
joiners, word joiner, byte-order mark, direction marks: Unicode category Cf), surrogates, and the other
default-ignorable or blank-looking code points (:data:`BLANK_LOOKING`). "Non-blank" means at least one visible
character, everywhere (:func:`promoe.data.schema.require_text`).
"""

from __future__ import annotations

import unicodedata

INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
"""Control, format, surrogate and separator (space, line, paragraph) characters."""

BLANK_LOOKING = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800, 0x3164, 0xFFA0,
     *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])
"""Code points outside those categories that show nothing on their own: the default-ignorable marks and
fillers (combining grapheme joiner, Hangul and Khmer fillers, Mongolian and other variation selectors) and the
blank Braille pattern."""


def invisible(ch: str) -> bool:
    """Whether one character shows nothing (module docstring)."""
    return ch.isspace() or unicodedata.category(ch) in INVISIBLE_CATEGORIES or ord(ch) in BLANK_LOOKING


def visible(text: str) -> bool:
    """Whether ``text`` holds at least one visible character: the one meaning of "non-blank"."""
    return not all(invisible(ch) for ch in text)


def _attaches(ch: str) -> bool:
    """A mark or tag that belongs to the character before it (a variation selector after an emoji, the tags of
    a flag): kept at the end of a text, where trimming it would change how that character shows."""
    return unicodedata.category(ch) == "Mn" or 0xE0020 <= ord(ch) <= 0xE007F


def clean(text: str) -> str:
    """``text`` in NFC without invisible characters at its start and end (except a mark that belongs to its
    last visible character). Idempotent; the form every name, id and Definition is compared in."""
    text = unicodedata.normalize("NFC", text)
    start, end = 0, len(text)
    while start < end and invisible(text[start]):
        start += 1
    while end > start:
        mark = end  # the end's run of marks that attach to the character before them
        while mark > start and invisible(text[mark - 1]) and _attaches(text[mark - 1]):
            mark -= 1
        if mark > start and not invisible(text[mark - 1]):
            break  # a visible character, with its marks
        end = mark if mark < end else end - 1
    return text[start:end]


def clean_names(value: object) -> object:
    """A value holding a name or a list of names (a task file's ``_meta``), each string cleaned; others as they
    are."""
    if isinstance(value, list):
        return [clean(v) if isinstance(v, str) else v for v in value]
    return clean(value) if isinstance(value, str) else value
