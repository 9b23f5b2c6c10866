"""Prompt tags: what a user colours by when picking a genre, an instrument or a mood.

ACE-Step prompts are comma-separated tags whose order is shuffled on every visit, so "the first
tag" of a prompt is random; a user picks a tag instead, and points are coloured by whether their
prompt has it. A latent or LoRA point stands for a clip, which has several prompt texts: it has
the tag when any of the clip's prompt texts does. Plain functions of snapshot columns; splitting a
prompt into tags is shared with the collector (acestep_viz/tags.py).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from acestep_viz.tags import MAX_TAG_CHARS, prompt_tags, tag_counts

__all__ = ["MAX_TAG_CHARS", "chosen_tag", "clip_tags", "has_tag", "prompt_tags", "tag_counts"]


def clip_tags(spaces: Mapping[str, Mapping[str, Sequence]]) -> dict[str, set[str]]:
    """{clip id: the tags of all its prompt texts} over every space's points."""
    tags: dict[str, set[str]] = {}
    for points in spaces.values():
        for clip, prompt in zip(points.get("id") or (), points.get("prompt") or ()):
            if clip is not None and prompt:
                tags.setdefault(str(clip), set()).update(prompt_tags(prompt))
    return tags


def has_tag(points: Mapping[str, Sequence], tag: str, by_clip: Mapping[str, set[str]] | None) -> list[bool | None]:
    """Per point: whether its own prompt has ``tag`` (``by_clip`` None), or whether its clip's prompt texts
    do; None where nothing is known."""
    wanted = tag.lower()
    if by_clip is None:
        return [wanted in prompt_tags(p) if p else None for p in points["prompt"]]
    return [wanted in by_clip[str(c)] if c is not None and str(c) in by_clip else None for c in points["id"]]


def chosen_tag(counts: Sequence[tuple[str, int]], choice: Any) -> str | None:
    """The tag to colour by: the user's choice, else the most common one."""
    if choice:
        return str(choice).lower()
    return counts[0][0] if counts else None
