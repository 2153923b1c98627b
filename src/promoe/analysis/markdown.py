"""Markdown pieces shared by the report's sections."""

from __future__ import annotations


def num(x: float | None, fmt: str = ".3f") -> str:
    """``x`` formatted, ``n/a`` for None."""
    return "n/a" if x is None else format(x, fmt)


def table(head: list[str], rows: list[list[str]], align: str = "---:") -> list[str]:
    """A Markdown table (first column left-aligned, the others ``align``) and a blank line."""
    return ["| " + " | ".join(head) + " |", "|---|" + f"{align}|" * (len(head) - 1),
            *("| " + " | ".join(r) + " |" for r in rows), ""]
