import os
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"


def pytest_collection_modifyitems(config, items):
    """Browser tests need Debian's Chromium. In CI its absence is a failure, elsewhere a skip."""
    if os.path.exists(CHROMIUM) or shutil.which("chromium"):
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI needs {CHROMIUM} for the browser tests: apt-get install -y chromium")
    skip = pytest.mark.skip(reason=f"{CHROMIUM} not installed (apt-get install chromium)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _acestep_viz_environment_restored():
    """Code under test may set ACESTEP_VIZ_* variables (the patched trainer.py sets ACESTEP_VIZ_AUTOSTART);
    they must not reach the processes later tests start."""
    before = {k: v for k, v in os.environ.items() if k.startswith("ACESTEP_VIZ_")}
    yield
    for name in [k for k in os.environ if k.startswith("ACESTEP_VIZ_") and k not in before]:
        del os.environ[name]
    os.environ.update(before)

