"""docs/: each page describes the current version, documents what the code declares, and holds no
account of how the project was developed."""
import re

import pytest
from support import REPO

from acestep_viz import __version__

DOCS = sorted((REPO / "docs").glob("*.md"))
HISTORY = re.compile(r"\bsessions? \d|\btried and dropped\b|\blast session\b|\bthis run measured\b|\bpreviously\b"
                     r"|\bno longer\b|\bused to\b", re.I)


def test_query_api_documents_every_query_op():
    from acestep_viz.collector.service import Collector

    text = (REPO / "docs" / "query-api.md").read_text(encoding="utf-8")
    for op in Collector.__new__(Collector)._handlers():
        assert f'"op": "{op}"' in text, op


@pytest.mark.parametrize("page", ["architecture", "wire-format", "store", "query-api", "benchmarks", "reliability"])
def test_reference_pages_name_the_version_they_describe(page):
    assert f"acestep-viz {__version__}" in (REPO / "docs" / f"{page}.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_no_development_history(path):
    found = HISTORY.findall(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name} tells history ({found}); describe the software as it is"


@pytest.mark.parametrize("page", ["benchmarks", "reliability"])
def test_every_figure_table_row_names_its_command_or_run(page):
    text = (REPO / "docs" / f"{page}.md").read_text(encoding="utf-8")
    assert "measured with" in text.lower() or "`python tests/benchmarks/" in text
    for line in text.splitlines():
        if page == "benchmarks" and line.startswith("| ") and not line.startswith(("| measure", "| ---")):
            assert "`" in line.split("|")[4] or "same run" in line, line
