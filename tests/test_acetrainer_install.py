"""`acestep-viz acetrainer install/uninstall` on ACETrainer-shaped checkouts (tests/fixtures/acetrainer)."""
from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, child_env

from acestep_viz.acetrainer import installer as acetrainer
from acestep_viz.acetrainer.installer import InstallError

FIXTURES = REPO / "tests" / "fixtures" / "acetrainer"
VARIANTS = {"two-tabs": "templates/index.html", "three-tabs": "static/index.html"}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "acestep_viz", "acetrainer", *map(str, args)], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=60)


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    return lines[0]


def checkout(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, hidden ones included."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def modes(root: Path) -> dict[str, int]:
    return {path.relative_to(root).as_posix(): path.stat().st_mode & 0o777
            for path in root.rglob("*") if path.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_install_then_uninstall_restores_every_file_byte_for_byte(tmp_path, variant):
    root = checkout(tmp_path, variant)
    os.chmod(root / VARIANTS[variant], 0o640)  # permission bits survive too
    before, before_modes = digest(root), modes(root)

    result = cli("install", root)
    assert result.returncode == 0, result.stderr
    assert "installed the 'embeddings' tab" in result.stdout
    page = (root / VARIANTS[variant]).read_text()
    assert page.count(acetrainer.BEGIN) == 3 and page.count(acetrainer.END) == 3
    assert (root / "static/js/acestep-viz-tab.js").is_file()
    assert (root / ".acestep-viz-backup/manifest.json").is_file()
    assert modes(root)[VARIANTS[variant]] == 0o640
    changed = {path for path, sha in digest(root).items() if before.get(path) != sha}
    assert {path for path in changed if not path.startswith(".acestep-viz-backup/")} == {
        VARIANTS[variant], "static/js/acestep-viz-tab.js"}

    result = cli("uninstall", root)
    assert result.returncode == 0, result.stderr
    assert digest(root) == before
    assert modes(root) == before_modes
    assert not (root / ".acestep-viz-backup").exists()


@pytest.mark.parametrize("variant", VARIANTS)
def test_second_install_changes_nothing(tmp_path, variant):
    root = checkout(tmp_path, variant)
    acetrainer.install(root)
    after_first = digest(root)
    report = acetrainer.install(root, dashboard_url="http://10.0.0.2:8050/")
    assert "already installed" in report[0] and "nothing changed" in report[0]
    assert digest(root) == after_first


def test_patched_page_keeps_the_existing_tabs_and_copies_their_look():
    text = (FIXTURES / "three-tabs/static/index.html").read_text()
    patched, tab = acetrainer.patch_page(text)
    assert tab == "embeddings"
    parts = acetrainer.page_parts(patched)
    assert [b.attrs["data-tab"] for b in parts.buttons] == ["training", "datasets", "visualization", "embeddings"]
    assert [p.attrs["id"] for p in parts.panels] == ["tab-training", "tab-datasets", "tab-visualization",
                                                     "tab-embeddings"]
    ours, theirs = parts.buttons[-1], parts.buttons[1]
    assert ours.attrs["class"] == theirs.attrs["class"] == "tab-btn"
    panel, hidden = parts.panels[-1], parts.panels[2]
    assert panel.attrs["class"] == hidden.attrs["class"] and panel.attrs["style"] == hidden.attrs["style"]
    assert panel.attrs["data-acestep-viz-port"] == "8050" and panel.attrs["data-acestep-viz-url"] == ""
    assert acetrainer.unpatch_page(patched) == text


def test_tab_name_does_not_clash():
    text = (FIXTURES / "three-tabs/static/index.html").read_text()
    for taken, expected in ((("embeddings",), "embeddings-live"),
                            (("embeddings", "embeddings-live"), "embeddings-live-2")):
        page = text
        for name in taken:
            page = page.replace('data-tab="datasets">', f'data-tab="datasets">x</button>'
                                f'<button class="tab-btn" data-tab="{name}">', 1)
        assert acetrainer.patch_page(page)[1] == expected


def test_jinja_script_path_is_reused():
    patched, _ = acetrainer.patch_page((FIXTURES / "two-tabs/templates/index.html").read_text())
    assert "<script src=\"{{ url_for('static', filename='js/acestep-viz-tab.js') }}\"></script>" in patched


def test_dashboard_url_goes_into_the_panel(tmp_path):
    root = checkout(tmp_path, "two-tabs")
    report = acetrainer.install(root, dashboard_url="http://gpu-box.local:9000/")
    assert "http://gpu-box.local:9000/" in report[0]
    page = (root / "templates/index.html").read_text()
    assert 'data-acestep-viz-url="http://gpu-box.local:9000/"' in page
    assert 'href="http://gpu-box.local:9000/"' in page


def test_crlf_page_round_trips():
    text = (FIXTURES / "two-tabs/templates/index.html").read_text().replace("\n", "\r\n")
    patched, _ = acetrainer.patch_page(text)
    assert "\n" not in patched.replace("\r\n", "")
    assert acetrainer.unpatch_page(patched) == text


@pytest.mark.parametrize("break_it, reason", [
    (lambda root: shutil.rmtree(root / "templates"), "neither templates/index.html nor static/index.html"),
    (lambda root: (root / "templates/index.html").write_text("<html><body><p>hello</p></body></html>"), "tab-btn"),
    (lambda root: (root / "static/js/app.js").write_text("console.log('hi');"), "switchTab"),
    (lambda root: (root / "static/js/app.js").unlink(), "static/js/app.js is missing"),
])
@pytest.mark.slow
def test_refuses_a_folder_that_is_not_acetrainer(tmp_path, break_it, reason):
    root = checkout(tmp_path, "two-tabs")
    break_it(root)
    before = digest(root)
    line = one_line_error(cli("install", root))
    assert reason in line, line
    assert digest(root) == before


@pytest.mark.slow
def test_refuses_a_missing_folder_and_a_bad_url(tmp_path):
    assert "is not a folder" in one_line_error(cli("install", tmp_path / "nowhere"))
    root = checkout(tmp_path, "two-tabs")
    before = digest(root)
    assert "--dashboard-url" in one_line_error(cli("install", root, "--dashboard-url", "gpu-box:8050"))
    assert "--dashboard-url" in one_line_error(cli("install", root, "--dashboard-url", 'http://x/"><script>'))
    assert digest(root) == before


def test_a_failure_on_the_second_file_leaves_the_first_unchanged(tmp_path, monkeypatch):
    root = checkout(tmp_path, "three-tabs")
    before = digest(root)
    real_put, calls = acetrainer.put, []

    def put_failing_second(root_, rel, data, mode=None):
        calls.append(rel)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_put(root_, rel, data, mode)

    monkeypatch.setattr(acetrainer, "put", put_failing_second)
    with pytest.raises(OSError, match="No space left"):
        acetrainer.install(root)
    assert calls[:2] == ["static/index.html", "static/js/acestep-viz-tab.js"]
    assert len(calls) == 3  # the rollback of the first file
    assert digest(root) == before  # no half-patched page, no temp files, no backup folder


def test_an_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "page.html"
    target.write_bytes(b"old")

    def no_replace(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(acetrainer.os, "replace", no_replace)
    with pytest.raises(OSError):
        acetrainer.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_a_failing_trainer_hookup_undoes_the_tab(tmp_path, monkeypatch):
    root, acestep = checkout(tmp_path, "two-tabs"), checkout(tmp_path, "ace-step")
    before = {**digest(root), **{f"ace/{k}": v for k, v in digest(acestep).items()}}
    real_apply = acetrainer.apply

    def apply_failing_hookup(plan):
        if plan.info["kind"] == "acestep":
            raise OSError("simulated failure")
        real_apply(plan)

    with pytest.raises(OSError):
        acetrainer.install(root, acestep=acestep, apply_plan=apply_failing_hookup)
    assert {**digest(root), **{f"ace/{k}": v for k, v in digest(acestep).items()}} == before


@pytest.mark.slow
def test_uninstall_refuses_to_lose_edits_unless_forced(tmp_path):
    root = checkout(tmp_path, "three-tabs")
    original = (root / "static/index.html").read_text()
    acetrainer.install(root)
    page = root / "static/index.html"
    page.write_text(page.read_text().replace("No dataset loaded.", "No dataset loaded yet."))

    line = one_line_error(cli("uninstall", root))
    assert "static/index.html" in line and "--force" in line
    assert acetrainer.BEGIN in page.read_text()  # nothing touched

    result = cli("uninstall", root, "--force")
    assert result.returncode == 0, result.stderr
    assert page.read_text() == original.replace("No dataset loaded.", "No dataset loaded yet.")
    assert (root / "static/index.html.acestep-viz-edited").is_file()
    assert not (root / "static/js/acestep-viz-tab.js").exists()
    assert not (root / ".acestep-viz-backup").exists()


@pytest.mark.slow
def test_a_damaged_backup_stops_uninstall_before_any_change(tmp_path):
    root = checkout(tmp_path, "three-tabs")
    acetrainer.install(root)
    (root / ".acestep-viz-backup/files/static/index.html").write_text("garbage")
    before = digest(root)
    assert "missing or damaged" in one_line_error(cli("uninstall", root))
    assert digest(root) == before


@pytest.mark.slow
def test_uninstall_without_an_install_says_so(tmp_path):
    root = checkout(tmp_path, "two-tabs")
    assert "nothing to uninstall" in one_line_error(cli("uninstall", root))


@pytest.mark.slow
def test_markers_without_a_backup_are_refused(tmp_path):
    root = checkout(tmp_path, "two-tabs")
    acetrainer.install(root)
    shutil.rmtree(root / ".acestep-viz-backup")
    (root / "static/js/acestep-viz-tab.js").unlink()
    line = one_line_error(cli("install", root))
    assert "already holds acestep-viz blocks" in line and "git checkout" in line


# ---------------------------------------------------------------------------------------- trainer.py


@pytest.mark.slow
def test_install_without_acestep_prints_the_lines_to_add(tmp_path):
    result = cli("install", checkout(tmp_path, "two-tabs"))
    assert result.returncode == 0, result.stderr
    assert "from acestep_viz import EmbeddingMonitor" in result.stdout
    assert "callbacks=[checkpoint_callback, EmbeddingMonitor()]" in result.stdout


@pytest.mark.slow
def test_trainer_hookup_round_trip(tmp_path):
    root, acestep = checkout(tmp_path, "two-tabs"), checkout(tmp_path, "ace-step")
    before = digest(acestep)
    result = cli("install", root, "--acestep", acestep)
    assert result.returncode == 0, result.stderr
    assert "added the EmbeddingMonitor hookup" in result.stdout
    text = (acestep / "trainer.py").read_text()
    assert "from acestep_viz import EmbeddingMonitor  # acestep-viz\n" in text
    assert "callbacks=[checkpoint_callback, lr_monitor_callback, EmbeddingMonitor()],  # acestep-viz\n" in text
    ours = [line for line in text.splitlines() if "EmbeddingMonitor" in line]
    assert len(ours) == 3 and all(line.endswith("  # acestep-viz") for line in ours)  # import, fallback, call
    assert "already installed" in cli("install", root, "--acestep", acestep).stdout

    result = cli("uninstall", root, "--acestep", acestep)
    assert result.returncode == 0, result.stderr
    assert digest(acestep) == before


def run_patched_main(acestep: Path, monkeypatch) -> dict:
    """Run the patched stand-in trainer.py's main() with Lightning's Trainer replaced by a recorder; returns
    the keyword arguments the Trainer got, and whether fit ran."""
    import argparse
    import runpy

    pl = pytest.importorskip("pytorch_lightning")
    seen = {}

    class RecordingTrainer:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def fit(self, model, ckpt_path=None):
            seen["fitted"] = True

    monkeypatch.setattr(pl, "Trainer", RecordingTrainer)
    namespace = runpy.run_path(str(acestep / "trainer.py"), run_name="acestep_trainer")
    namespace["main"](argparse.Namespace(
        learning_rate=1e-4, max_steps=2, every_n_train_steps=10, logger_dir=str(acestep / "logs"),
        exp_name="t", accelerator="cpu", devices=1, precision="32", accumulate_grad_batches=1, ckpt_path=None,
        gradient_clip_val=0.5))
    return seen


def test_patched_trainer_passes_the_monitor_to_lightning(tmp_path, monkeypatch):
    """Run the patched stand-in's main(): Trainer(...) receives an EmbeddingMonitor among its callbacks."""
    from acestep_viz.trainer_plugin.lightning import EmbeddingMonitor

    acestep = checkout(tmp_path, "ace-step")
    acetrainer.apply(acetrainer.plan_hookup(acestep))
    monkeypatch.setenv("ACESTEP_VIZ_AUTOSTART", "0")  # this test starts no sidecar
    seen = run_patched_main(acestep, monkeypatch)
    assert seen["fitted"]
    kinds = [type(callback).__name__ for callback in seen["callbacks"]]
    assert kinds == ["ModelCheckpoint", "LearningRateMonitor", "EmbeddingMonitor"]
    assert isinstance(seen["callbacks"][-1], EmbeddingMonitor)


def test_patched_trainer_still_trains_where_acestep_viz_cannot_be_imported(tmp_path, monkeypatch, capsys):
    """ACE-Step's Python may lack acestep_viz: the guarded import falls back to Lightning's no-op Callback."""
    pl = pytest.importorskip("pytorch_lightning")
    acestep = checkout(tmp_path, "ace-step")
    acetrainer.apply(acetrainer.plan_hookup(acestep))
    for name in [n for n in sys.modules if n == "acestep_viz" or n.startswith("acestep_viz.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "acestep_viz", None)  # "import acestep_viz" raises ImportError
    seen = run_patched_main(acestep, monkeypatch)
    assert seen["fitted"]
    assert type(seen["callbacks"][-1]) is pl.Callback  # a no-op callback in the monitor's place
    assert "no embedding monitor, training goes on without it" in capsys.readouterr().out


TRAINER_SHAPES = {
    "one line": "callbacks=[checkpoint_callback],",
    "two on one line": "callbacks=[checkpoint_callback, lr_monitor_callback],",
    "empty": "callbacks=[],",
    "multi-line, trailing comma": "callbacks=[\n            checkpoint_callback,\n            lr_monitor_callback,\n"
                                  "        ],",
    "multi-line, no trailing comma": "callbacks=[\n            checkpoint_callback,\n            lr_monitor_callback\n"
                                     "        ],",
    "comment with a comma": "callbacks=[checkpoint_callback  # keep, please\n        ],",
    "trailing comma inline": "callbacks=[checkpoint_callback,],",
}


def trainer_source(callbacks: str, call: str = "Trainer", newline: str = "\n") -> str:
    source = (f'"""ACE-Step trainer."""\nimport argparse\n\nfrom pytorch_lightning import Trainer\n'
              f'import pytorch_lightning as pl\n\nMODE = "é"  # non-ASCII before the call\n\n\ndef main(args):\n'
              f'    checkpoint_callback = lr_monitor_callback = None\n    trainer = {call}(\n'
              f'        max_steps=args.max_steps,\n        {callbacks}\n        log_every_n_steps=1,\n    )\n'
              f'    trainer.fit(None)\n')
    return source.replace("\n", newline)


def monitor_is_last_callback(source: str) -> bool:
    tree = ast.parse(source)
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Trainer")
    last = next(k for k in call.keywords if k.arg == "callbacks").value.elts[-1]
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "acestep_viz"]
    return isinstance(last, ast.Call) and last.func.id == "EmbeddingMonitor" and len(imports) == 1


@pytest.mark.parametrize("shape", TRAINER_SHAPES)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_trainer_patch_fits_every_callbacks_layout_and_reverses_exactly(shape, newline):
    source = trainer_source(TRAINER_SHAPES[shape], newline=newline)
    patched = acetrainer.patch_trainer(source)
    assert monitor_is_last_callback(patched)
    assert all(line.endswith(acetrainer.PY_MARK) for line in patched.splitlines() if "EmbeddingMonitor" in line)
    assert acetrainer.unpatch_trainer(patched) == source


def test_trainer_patch_finds_pl_trainer():
    patched = acetrainer.patch_trainer(trainer_source("callbacks=[checkpoint_callback],", call="pl.Trainer"))
    assert monitor_is_last_callback(patched)


@pytest.mark.parametrize("source, reason", [
    ("import argparse\n\ndef main(args):\n    pass\n", "no Trainer(...) call"),
    ("from pytorch_lightning import Trainer\n\ndef main(args):\n    Trainer(callbacks=make())\n", "callbacks=[...]"),
    ("def main(args:\n", "does not parse"),
])
def test_trainer_patch_refuses_what_it_cannot_do_safely(source, reason):
    with pytest.raises(InstallError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")) as caught:
        acetrainer.patch_trainer(source)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("0", "0")])
def test_the_patched_trainer_turns_autostart_on_unless_the_user_said_otherwise(preset, expected):
    shown = "print(EmbeddingMonitor.__name__, os.environ['ACESTEP_VIZ_AUTOSTART'])"
    code = "\n".join([*acetrainer.IMPORT_BLOCK, shown])
    env = {k: v for k, v in child_env().items() if k != "ACESTEP_VIZ_AUTOSTART"}
    if preset is not None:
        env["ACESTEP_VIZ_AUTOSTART"] = preset
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["EmbeddingMonitor", expected], done.stderr
