"""docs/settings.md is generated from the declared settings; the committed file must match."""
from pathlib import Path

from acestep_viz.collector.options import COLLECTOR_SETTINGS
from acestep_viz.trainer_plugin.settings import TRAINER_SETTINGS
from support import REPO

from acestep_viz import cli
from acestep_viz.settings import Setting
from acestep_viz.settings_docs import DOC_PATH, REGENERATE, Section, settings_markdown, settings_table


def test_committed_settings_doc_matches_the_declared_settings():
    committed = (REPO / DOC_PATH).read_text(encoding="utf-8")
    assert committed == settings_markdown(), f"{DOC_PATH} is out of date; regenerate it with `{REGENERATE}`"


def test_a_new_setting_gets_a_row_with_flag_variable_default_and_help():
    added = Setting("frobnicate_level", 3, "how hard to frobnicate | in units", parse=int)
    table = settings_table([*COLLECTOR_SETTINGS, added])
    assert table.splitlines()[-1] == ("| `--frobnicate-level` | `ACESTEP_VIZ_FROBNICATE_LEVEL` | `3` | "
                                      "how hard to frobnicate \\| in units |")
    assert len(table.splitlines()) == 2 + len(COLLECTOR_SETTINGS) + 1


def test_trainer_settings_are_documented_as_keyword_arguments():
    text = settings_markdown([Section("Trainer side", TRAINER_SETTINGS, as_argument=True)])
    for setting in TRAINER_SETTINGS:
        assert f"| `{setting.name}=` | `{setting.env}` |" in text


def test_machine_dependent_defaults_are_documented_not_this_machines_value():
    store = next(s for s in COLLECTOR_SETTINGS if s.name == "store")
    row = next(line for line in settings_table([store]).splitlines() if "--store" in line)
    assert "~/.local/share/acestep-viz/runs" in row and "%LOCALAPPDATA%" in row
    assert str(Path.home()) not in row


def test_the_command_prints_the_doc_and_writes_it(capsys, tmp_path):
    assert cli.main(["settings", "--markdown"]) == 0
    assert capsys.readouterr().out == settings_markdown()
    out = tmp_path / "settings.md"
    assert cli.main(["settings", "--markdown", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == settings_markdown()


def test_the_terminal_listing_names_every_setting(capsys):
    assert cli.main(["settings"]) == 0
    listing = capsys.readouterr().out
    for setting in (*COLLECTOR_SETTINGS, *TRAINER_SETTINGS):
        assert setting.env in listing
