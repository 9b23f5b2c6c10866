"""Prompt tags: the comma-separated pieces of an ACE-Step prompt text, shared by the collector and the dashboard.

ACE-Step prompts are comma-separated tags whose order is shuffled on every visit, so a tag is
found by splitting, never by position. Plain functions of strings.
"""
from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Any, Iterable

_SEPARATORS = re.compile(r"[,;]")
MAX_TAG_CHARS = 60  # longer "tags" are sentences (recaptions), not tags


def prompt_tags(prompt: Any) -> list[str]:
    """The tags of a prompt: split at commas (and semicolons), trimmed, lower case, blanks dropped."""
    if not prompt:
        return []
    return list(_split_tags(str(prompt)))


@functools.lru_cache(maxsize=1 << 16)  # maps and their redraws split the same texts again and again
def _split_tags(prompt: str) -> tuple[str, ...]:
    tags = (" ".join(part.split()).lower() for part in _SEPARATORS.split(prompt))
    return tuple(tag for tag in tags if tag)


def tag_counts(prompts: Iterable[Any]) -> list[tuple[str, int]]:
    """(tag, how many distinct prompt texts have it), most common first, ties by name; sentence-long
    pieces are left out."""
    counts: Counter[str] = Counter()
    for prompt in {str(p) for p in set(prompts) if p}:  # set() first: a map repeats each text many times
        counts.update({tag for tag in prompt_tags(prompt) if len(tag) <= MAX_TAG_CHARS})
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
