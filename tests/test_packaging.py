"""The installed shape: one ``acestep_viz`` namespace, a wheel that serves the styled dashboard, one-way imports."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import zipfile

import pytest
from support import REPO, free_port, wait_for

import acestep_viz


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("acestep_viz-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.mark.slow
def test_the_wheel_holds_only_the_acestep_viz_namespace_with_its_assets(wheel):
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"acestep_viz", f"acestep_viz-{acestep_viz.__version__}.dist-info"}
    for needed in ("acestep_viz/assets/bootstrap.min.css", "acestep_viz/assets/acestep-viz.css",
                   "acestep_viz/acetrainer/acestep-viz-tab.js", "acestep_viz/collector/service.py",
                   "acestep_viz/dashboard/app.py", "acestep_viz/trainer_plugin/tap.py",
                   f"acestep_viz-{acestep_viz.__version__}.dist-info/licenses/LICENSE"):
        assert needed in names, needed
    entry_points = wheel.read(f"acestep_viz-{acestep_viz.__version__}.dist-info/entry_points.txt").decode()
    assert "acestep-viz = acestep_viz.cli:main" in entry_points


@pytest.mark.slow
def test_a_regular_install_serves_the_styled_dashboard_offline(wheel, tmp_path):
    target = tmp_path / "site"
    wheel.extractall(target)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)  # ahead of the checkout's editable install
    proc = subprocess.Popen([sys.executable, "-m", "acestep_viz", "dashboard", "--port", str(port),
                             "--collector", f"tcp://127.0.0.1:{free_port()}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(path: str) -> tuple[int, bytes] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
                    return reply.status, reply.read()
            except OSError:
                return None

        status, page = wait_for(lambda: get("/"), timeout=60)
        assert status == 200 and b"bootstrap.min.css" in page and b"acestep-viz.css" in page
        status, css = get("/assets/bootstrap.min.css")
        assert status == 200 and b"bootstrap" in css.lower()
        located = subprocess.run([sys.executable, "-c", "import acestep_viz; print(acestep_viz.__file__)"],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert located.stdout.strip().startswith(str(target)), located.stdout  # served by the wheel's files
    finally:
        proc.terminate()
        proc.wait(timeout=30)


IMPORT_DIRECTION = {
    # importing this must not import any of those: dependencies point one way
    "acestep_viz.trainer_plugin.tap": ("acestep_viz.collector", "acestep_viz.dashboard", "dash", "pacmap"),
    "acestep_viz.trainer_plugin.lightning": ("acestep_viz.collector", "acestep_viz.dashboard", "dash", "pacmap"),
    "acestep_viz.collector.service": ("acestep_viz.dashboard", "acestep_viz.trainer_plugin", "torch", "dash"),
    "acestep_viz.dashboard.app": ("acestep_viz.collector", "acestep_viz.trainer_plugin", "torch", "pacmap"),
    "acestep_viz.cli": ("torch", "dash", "pacmap", "acestep_viz.dashboard.app", "acestep_viz.collector.service"),
}


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(IMPORT_DIRECTION))
def test_imports_point_one_way(module):
    forbidden = IMPORT_DIRECTION[module]
    code = f"import sys, {module}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
