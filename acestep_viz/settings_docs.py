"""docs/settings.md, rendered from the declared settings (``acestep-viz settings --markdown``).

Pure functions of the ``Setting`` declarations: a setting added to a component's declaration appears
in the tables without anything else to edit, and a test fails while the committed file differs.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

from acestep_viz.settings import Setting

REGENERATE = "python -m acestep_viz settings --markdown --out docs/settings.md"
DOC_PATH = "docs/settings.md"


class Section(NamedTuple):
    title: str
    settings: Sequence[Setting]
    as_argument: bool = False  # trainer side: documented as a keyword argument, not a flag


def sections() -> list[Section]:
    """Every declared group of settings, in the order the docs show them."""
    from acestep_viz.collector.options import COLLECTOR_SETTINGS
    from acestep_viz.dashboard.options import DASHBOARD_SETTINGS
    from acestep_viz.trainer_plugin.settings import DEMO_SETTINGS, TRAINER_SETTINGS

    return [
        Section("Collector (`acestep-viz collector`, `acestep-viz up`)", COLLECTOR_SETTINGS),
        Section("Dashboard (`acestep-viz dashboard`; `up` takes `--host`, `--port`, `--interval`, `--url-prefix`)",
                DASHBOARD_SETTINGS),
        Section("Demo (`acestep-viz demo`, `acestep-viz up --demo`; also `--endpoint` and `--run` below)",
                DEMO_SETTINGS),
        Section("Trainer side (`EmbeddingMonitor(...)` / `attach(...)` arguments)", TRAINER_SETTINGS,
                as_argument=True),
    ]


def shown_default(setting: Setting) -> str:
    if setting.doc_default is not None:
        return setting.doc_default
    value = setting.default
    if value is None or value == ():
        return "not set"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def settings_table(settings: Iterable[Setting], as_argument: bool = False) -> str:
    """One Markdown table: flag (or argument), environment variable, default, what it does."""
    first = "argument" if as_argument else "flag"
    rows = [f"| {first} | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for s in settings:
        key = f"`{s.name}=`" if as_argument else f"`{s.flag}`"
        rows.append(f"| {key} | `{s.env}` | {_cell(shown_default(s))} | {_cell(s.help)} |")
    return "\n".join(rows)


def settings_markdown(groups: Sequence[Section] | None = None) -> str:
    """The whole of docs/settings.md."""
    parts = [
        "# Settings",
        "",
        f"<!-- Generated from the declared settings by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Every setting is a command-line flag and an `ACESTEP_VIZ_*` environment variable: a flag wins over the "
        "variable, the variable over the default. Values are checked at start-up; a bad one stops the command "
        "with one line that names the flag or variable and says what to fix. On the trainer side the flag is a "
        "keyword argument of `EmbeddingMonitor(...)` or `attach(...)`. `acestep-viz settings` lists them in a "
        "terminal.",
    ]
    for section in sections() if groups is None else groups:
        parts += ["", f"## {section.title}", "", settings_table(section.settings, section.as_argument)]
    return "\n".join(parts) + "\n"


def settings_text(groups: Sequence[Section] | None = None) -> str:
    """The same settings for a terminal, one line per setting, with this machine's defaults."""
    lines: list[str] = []
    for section in sections() if groups is None else groups:
        lines += [section.title.replace("`", ""), ""]
        for s in section.settings:
            key = f"{s.name}=" if section.as_argument else s.flag
            default = "not set" if s.default in (None, ()) else s.default
            lines.append(f"  {key:<26} {s.env:<36} {default}")
        lines.append("")
    return "\n".join(lines)
