"""The README is for users: it opens with the two commands, stays short, and points to the docs."""
import re

from support import REPO

from acestep_viz.cli import build_parser

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_readme_stays_short():
    assert len(README.encode("utf-8")) <= 15_000, "move details into docs/ and link them"


def test_readme_lists_every_command():
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in subcommands:
        assert re.search(rf"`acestep-viz {name}\b", README), name


def test_readme_points_to_the_generated_settings_and_the_docs_it_links_exist():
    assert "docs/settings.md" in README
    for target in re.findall(r"\]\((docs/[^)#]+)\)", README):
        if target != "docs/acestep15.md":  # maintained with the ACE-Step 1.5 integration
            assert (REPO / target).is_file(), target
