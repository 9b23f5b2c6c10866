from pathlib import Path

from acestep_viz.collector.options import COLLECTOR_SETTINGS
from acestep_viz.dashboard.options import DASHBOARD_SETTINGS
from acestep_viz.trainer_plugin.settings import DEMO_SETTINGS, TRAINER_SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_readme_documents_every_setting():
    for setting in (*COLLECTOR_SETTINGS, *DASHBOARD_SETTINGS, *DEMO_SETTINGS):
        assert f"`{setting.flag}`" in README and f"`{setting.env}`" in README, setting.name
    for setting in TRAINER_SETTINGS:
        assert f"`{setting.name}=`" in README and f"`{setting.env}`" in README, setting.name


def test_readme_documents_every_query_op():
    from acestep_viz.collector.service import Collector
    ops = Collector.__new__(Collector)._handlers()
    for op in ops:
        assert f'"op": "{op}"' in README, op
