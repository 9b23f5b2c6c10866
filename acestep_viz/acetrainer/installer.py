"""Install the live embeddings tab into an ACETrainer checkout, and the monitor into ACE-Step's trainer.py.

Pure core: ``patch_page`` / ``patch_trainer`` compute the new text of a file and ``unpatch_page`` /
``unpatch_trainer`` take out exactly what they added (every insertion sits between
``<!-- acestep-viz:begin -->`` and ``<!-- acestep-viz:end -->``, or on a line ending in
``# acestep-viz``). Thin shell: ``install`` / ``uninstall`` write those texts atomically (a temp
file in the same folder, then ``os.replace``), keep a byte-for-byte copy of every original under
``.acestep-viz-backup/`` with a manifest of sha256 sums, and put back every file already written
when a later one fails. No Dash, no torch.
"""
from __future__ import annotations

import ast
import hashlib
import html
import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

from acestep_viz.dashboard.options import PORT

BACKUP_DIR = ".acestep-viz-backup"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
EDITED_SUFFIX = ".acestep-viz-edited"

BEGIN = "<!-- acestep-viz:begin -->"
END = "<!-- acestep-viz:end -->"
PY_MARK = "# acestep-viz"

INDEX_CANDIDATES = ("templates/index.html", "static/index.html")
APP_JS = "static/js/app.js"
TAB_SCRIPT = "acestep-viz-tab.js"
TAB_NAMES = ("embeddings", "embeddings-live")
DASHBOARD_PORT = PORT.default

IMPORT_LINE = "from acestep_viz import EmbeddingMonitor"
# The import is guarded: where ACE-Step's Python cannot import acestep_viz, EmbeddingMonitor() is Lightning's
# no-op Callback and training runs as before (trainer.py imports pytorch_lightning anyway). Where it can, the
# monitor starts the sidecar when none runs (autostart), unless ACESTEP_VIZ_AUTOSTART=0 says otherwise.
IMPORT_BLOCK = (
    "try:",
    f"    {IMPORT_LINE}",
    "    import os",
    '    os.environ.setdefault("ACESTEP_VIZ_AUTOSTART", "1")',
    "except Exception as error:",
    '    print(f"acestep-viz: no embedding monitor, training goes on without it ({error!r})")',
    "    from pytorch_lightning import Callback as EmbeddingMonitor",
)
MONITOR_CALL = "EmbeddingMonitor()"
MANUAL_HOOKUP = (
    "To capture embeddings, add the EmbeddingMonitor to ACE-Step's trainer.py (or rerun with --acestep PATH):\n"
    "  1. with the other imports (guarded: training goes on where acestep_viz cannot be imported):\n"
    + "".join(f"       {line}  {PY_MARK}\n" for line in IMPORT_BLOCK) +
    "  2. in main()'s Trainer(...) call, at the end of the callbacks list:\n"
    f"       callbacks=[checkpoint_callback, {MONITOR_CALL}],  {PY_MARK}\n"
    "  and make acestep_viz importable by ACE-Step's Python: pip install /path/to/acestep-viz[trainer]"
)


class InstallError(Exception):
    """Something the user can fix; the message says what and how."""


# ---------------------------------------------------------------------------------------------- HTML


VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    start: int
    start_tag: str
    end: int | None = None  # offset just past the end tag; None while (or if never) closed

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()


class _Scanner(HTMLParser):
    """Every element with its character offsets in the source text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=False)
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.elements: list[Element] = []
        self.open: list[Element] = []

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def _element(self, tag: str, attrs) -> Element:
        raw = self.get_starttag_text() or ""
        element = Element(tag, {name: value or "" for name, value in attrs}, self._offset(), raw)
        self.elements.append(element)
        return element

    def handle_starttag(self, tag, attrs):
        element = self._element(tag, attrs)
        if tag in VOID_TAGS:
            element.end = element.start + len(element.start_tag)
        else:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        element = self._element(tag, attrs)
        element.end = element.start + len(element.start_tag)

    def handle_endtag(self, tag):
        if not any(element.tag == tag for element in self.open):
            return
        end = self.text.index(">", self._offset()) + 1
        while self.open:
            element = self.open.pop()
            if element.tag == tag:
                element.end = end
                return


def scan(text: str) -> list[Element]:
    scanner = _Scanner(text)
    scanner.feed(text)
    scanner.close()
    return scanner.elements


def newline_of(text: str) -> str:
    return "\r\n" if text.count("\r\n") * 2 > text.count("\n") else "\n"


def indent_at(text: str, offset: int) -> str:
    line_start = max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset)) + 1
    return re.match(r"[ \t]*", text[line_start:offset]).group(0)


def marked_block(lines: Sequence[str], indent: str, newline: str) -> str:
    """What goes right after an anchor: a newline, then the block between the markers, indented."""
    return "".join(newline + indent + line for line in (BEGIN, *lines, END))


MARKED_BLOCK = re.compile(r"(?:\r\n|\n|\r)[ \t]*" + re.escape(BEGIN) + r".*?" + re.escape(END), re.S)


def unpatch_page(text: str) -> str:
    """The page without any of our marked blocks (the exact inverse of ``patch_page``)."""
    return MARKED_BLOCK.sub("", text)


@dataclass(frozen=True)
class PageParts:
    """What the installer needs to know about an ACETrainer page."""

    buttons: list[Element]
    panels: list[Element]
    app_script: Element
    ids: set[str]


def page_parts(text: str, where: str = "index.html") -> PageParts:
    """The tab buttons, tab panels and app.js script tag, or an error saying which is missing."""
    elements = scan(text)
    buttons = [e for e in elements if "tab-btn" in e.classes and e.attrs.get("data-tab")]
    panels = [e for e in elements if "tab-content" in e.classes and e.attrs.get("id", "").startswith("tab-")]
    scripts = [e for e in elements if e.tag == "script" and re.search(r"(?<![\w-])app\.js", e.attrs.get("src", ""))]
    if not buttons:
        raise InstallError(f"{where} has no tab buttons (class \"tab-btn\" with a data-tab): "
                           "not an ACETrainer page this installer knows")
    if not panels:
        raise InstallError(f"{where} has no tab panels (class \"tab-content\" with id \"tab-NAME\"): "
                           "not an ACETrainer page this installer knows")
    if not scripts:
        raise InstallError(f"{where} does not load app.js with a <script src=...>: "
                           "not an ACETrainer page this installer knows")
    for element in (buttons[-1], panels[-1], scripts[-1]):
        if element.end is None:
            line = text.count("\n", 0, element.start) + 1
            raise InstallError(f"{where}: the <{element.tag}> on line {line} is never closed; fix the HTML first")
    return PageParts(buttons, panels, scripts[-1], {e.attrs["id"] for e in elements if e.attrs.get("id")})


def choose_tab_name(parts: PageParts) -> str:
    """The first free name: ``embeddings``, ``embeddings-live``, ``embeddings-live-2``, ..."""
    taken = {b.attrs["data-tab"] for b in parts.buttons} | {i[len("tab-"):] for i in parts.ids if i.startswith("tab-")}
    candidates = [*TAB_NAMES, *(f"{TAB_NAMES[-1]}-{n}" for n in range(2, 100))]
    return next(name for name in candidates if name not in taken)


def without_active(classes: str) -> str:
    return " ".join(token for token in classes.split() if token != "active")


def model_panel(parts: PageParts) -> Element:
    """A panel that is hidden when the page loads, to copy its classes and style from."""
    hidden = [p for p in parts.panels if "active" not in p.classes]
    return (hidden or parts.panels)[-1]


def check_dashboard_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r"[\s\"'<>`]", url):
        raise InstallError(f"--dashboard-url must be an http(s) URL such as http://192.168.1.5:8050/, got {url!r}")
    return url


ICON = ('<svg class="w-4 h-4" width="16" height="16" fill="none" stroke="currentColor" viewBox="0 0 24 24">'
        '<circle cx="6" cy="16" r="2" stroke-width="2"/><circle cx="11" cy="7" r="2" stroke-width="2"/>'
        '<circle cx="18" cy="13" r="2" stroke-width="2"/><circle cx="15" cy="20" r="1.5" stroke-width="2"/></svg>')


def tab_button_lines(parts: PageParts, name: str) -> list[str]:
    model = next((b for b in parts.buttons if "active" not in b.classes), parts.buttons[-1])
    label = "Embeddings" if name == TAB_NAMES[0] else "Live Embeddings"
    return [f'<button class="{html.escape(without_active(model.attrs["class"]))}" data-tab="{name}" '
            f'title="Live PaCMAP maps of the training embeddings (acestep-viz)">',
            f"    {ICON}",
            f"    {label}",
            "</button>"]


# inline, so the frame fills the tab whatever the page's stylesheet offers (Tailwind or not)
FRAME_STYLE = "border:0;width:100%;flex:1 1 auto;min-height:max(480px, calc(100vh - 160px));background:#111827;"


def tab_panel_lines(parts: PageParts, name: str, text: str, dashboard_url: str | None) -> list[str]:
    model = model_panel(parts)
    style = "display:none;" if "active" in model.classes else model.attrs.get("style")
    style_attr = f' style="{html.escape(style)}"' if style else ""
    url = html.escape(dashboard_url or "")
    href = html.escape(dashboard_url or f"http://127.0.0.1:{DASHBOARD_PORT}/")
    link_class = "btn btn-secondary btn-sm" if "btn-secondary" in text else "text-sm text-purple-400"
    return [f'<div id="tab-{name}" class="{html.escape(without_active(model.attrs["class"]))}"{style_attr} '
            f'data-acestep-viz-tab="{name}" data-acestep-viz-url="{url}" data-acestep-viz-port="{DASHBOARD_PORT}">',
            '    <div class="bg-gray-900 border-b border-gray-800 px-6 py-2 flex items-center gap-3 flex-shrink-0">',
            '        <span class="text-sm text-gray-400">Live PaCMAP maps of the audio latents, LoRA outputs and '
            'prompt embeddings.</span>',
            '        <span class="text-sm text-gray-300" data-acestep-viz-status role="status">Checking the sidecar '
            '(<code>acestep-viz up</code>)...</span>',
            '        <div class="flex-1"></div>',
            f'        <a class="{link_class}" data-acestep-viz-open href="{href}" target="_blank" '
            'rel="noopener">Open in new window</a>',
            '    </div>',
            '    <iframe data-acestep-viz-frame title="acestep-viz dashboard" class="flex-1 w-full" '
            f'style="{FRAME_STYLE}"></iframe>',
            "</div>"]


def script_lines(parts: PageParts) -> list[str]:
    """Our script tag: the app.js tag itself with app.js renamed, so a Jinja url_for or a prefix still works."""
    start_tag = parts.app_script.start_tag
    at = max(m.start() for m in re.finditer(r"(?<![\w-])app\.js", start_tag))
    return [start_tag[:at] + TAB_SCRIPT + start_tag[at + len("app.js"):] + "</script>"]


def patch_page(text: str, dashboard_url: str | None = None, where: str = "index.html") -> tuple[str, str]:
    """(new page text, tab name): a nav button, a tab panel with the iframe, and our script tag."""
    if BEGIN in text:
        raise InstallError(f"{where} already holds acestep-viz blocks but no backup of the original; take them "
                           "out (e.g. git checkout, or delete from each acestep-viz:begin to acestep-viz:end) "
                           "and install again")
    parts = page_parts(text, where)
    name = choose_tab_name(parts)
    newline = newline_of(text)
    insertions = [
        (parts.buttons[-1], tab_button_lines(parts, name)),
        (parts.panels[-1], tab_panel_lines(parts, name, text, check_dashboard_url(dashboard_url))),
        (parts.app_script, script_lines(parts)),
    ]
    for anchor, lines in sorted(insertions, key=lambda pair: pair[0].end, reverse=True):
        block = marked_block(lines, indent_at(text, anchor.start), newline)
        text = text[:anchor.end] + block + text[anchor.end:]
    return text, name


TAB_JS_FILE = Path(__file__).with_name(TAB_SCRIPT)  # copied into the checkout beside app.js


# ------------------------------------------------------------------------------------- trainer.py


def line_starts(text: str) -> list[int]:
    """Offset of each physical line, numbered the way Python's tokenizer numbers them (\\n, \\r\\n, \\r)."""
    starts = [0]
    for line in io.StringIO(text, newline="").readlines():
        starts.append(starts[-1] + len(line))
    return starts


def offset_of(text: str, starts: list[int], lineno: int, byte_column: int) -> int:
    """ast positions count UTF-8 bytes within a line; string slicing counts characters."""
    line = text[starts[lineno - 1]:starts[lineno]]
    return starts[lineno - 1] + len(line.encode("utf-8")[:byte_column].decode("utf-8", errors="ignore"))


def parse_python(text: str, where: str) -> ast.Module:
    try:
        return ast.parse(text, filename=where)
    except SyntaxError as exc:
        raise InstallError(f"{where} does not parse as Python ({exc.msg}, line {exc.lineno}); fix it first") from None


def _is_trainer_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "Trainer") or (
        isinstance(func, ast.Attribute) and func.attr == "Trainer")


def find_callbacks_list(tree: ast.Module, where: str) -> ast.List:
    """The ``callbacks=[...]`` list of the ``Trainer(...)`` call (the one in ``main`` if there are several)."""
    calls = [node for node in ast.walk(tree) if _is_trainer_call(node)]
    mains = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main"]
    in_main = [c for c in calls if mains and any(c is n for n in ast.walk(mains[0]))]
    chosen = in_main or calls
    if len(chosen) != 1:
        found = "no Trainer(...) call" if not chosen else f"{len(chosen)} Trainer(...) calls"
        raise InstallError(f"{where}: found {found}; add the hookup by hand. {one_line(MANUAL_HOOKUP)}")
    keyword = next((k for k in chosen[0].keywords if k.arg == "callbacks"), None)
    if keyword is None or not isinstance(keyword.value, ast.List):
        raise InstallError(f"{where}: the Trainer(...) call has no callbacks=[...] list; add the hookup by hand. "
                           f"{one_line(MANUAL_HOOKUP)}")
    return keyword.value


def import_line_number(tree: ast.Module) -> int:
    """The line after the module's opening run of imports (or its docstring): where our import goes."""
    last = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            last = node.end_lineno
        elif last or not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            break
        else:
            last = node.end_lineno  # the docstring
    return last


def insert(text: str, at: int, added: str) -> str:
    return text[:at] + added + text[at:]


def mark_line(text: str, at: int) -> str:
    """Add the marker comment at the end of the line holding offset ``at``."""
    end = re.compile(r"\r\n|\n|\r|$").search(text, at).start()
    return insert(text, end, f"  {PY_MARK}")


def trailing_comma(between: str) -> int | None:
    """Index of the comma after a list's last element, comments ignored."""
    offset = 0
    for line in io.StringIO(between, newline="").readlines():
        code = line.split("#", 1)[0]
        if "," in code:
            return offset + code.index(",")
        offset += len(line)
    return None


def add_monitor_call(text: str, callbacks: ast.List, newline: str) -> str:
    """``EmbeddingMonitor()`` appended to the callbacks list, on a marked line."""
    starts = line_starts(text)
    close = offset_of(text, starts, callbacks.end_lineno, callbacks.end_col_offset) - 1  # the "]"
    if not callbacks.elts:
        at = offset_of(text, starts, callbacks.lineno, callbacks.col_offset) + 1
        return mark_line(insert(text, at, MONITOR_CALL), at)
    last = callbacks.elts[-1]
    after_last = offset_of(text, starts, last.end_lineno, last.end_col_offset)
    comma = trailing_comma(text[after_last:close])
    if comma is None:
        return mark_line(insert(text, after_last, f", {MONITOR_CALL}"), after_last)
    comma += after_last
    close_line = starts[callbacks.end_lineno - 1]
    if close_line > comma and not text[close_line:close].strip():  # "]" alone on its line: a line of our own
        indent = indent_at(text, offset_of(text, starts, last.lineno, last.col_offset))
        return insert(text, close_line, f"{indent}{MONITOR_CALL},  {PY_MARK}{newline}")
    return mark_line(insert(text, comma + 1, f" {MONITOR_CALL},"), comma)


def add_import(text: str, tree: ast.Module, newline: str) -> str:
    starts = line_starts(text)
    number = import_line_number(tree)
    if number == 0:  # no imports, no docstring: below a shebang or coding comment
        while number < len(starts) - 1 and text[starts[number]:starts[number + 1]].startswith("#"):
            number += 1
    at = starts[number]
    before = newline if at == len(text) and text and not text.endswith(("\n", "\r")) else ""
    return insert(text, at, before + "".join(f"{line}  {PY_MARK}{newline}" for line in IMPORT_BLOCK))


def patch_trainer(text: str, where: str = "trainer.py") -> str:
    """trainer.py with the marked import and ``EmbeddingMonitor()`` in the Trainer's callbacks."""
    if PY_MARK in text:
        raise InstallError(f"{where} already holds acestep-viz lines (marked {PY_MARK!r}) but no backup of the "
                           "original; take them out (e.g. git checkout) and install again")
    tree = parse_python(text, where)
    newline = newline_of(text)
    # the list sits below the imports: patch it first and the import's line number stays right
    patched = add_import(add_monitor_call(text, find_callbacks_list(tree, where), newline), tree, newline)
    parse_python(patched, f"{where} after patching")
    return patched


_OWN_LINES = frozenset([*(line.strip() for line in IMPORT_BLOCK), f"{MONITOR_CALL},"])
MARKED_PY_LINE = re.compile(r"[^\r\n]*  " + re.escape(PY_MARK) + r"(?:\r\n|\n|\r|$)")


def unpatch_trainer(text: str) -> str:
    """trainer.py without our marked lines and insertions (the exact inverse of ``patch_trainer``)."""
    def restore(match: re.Match) -> str:
        line = match.group(0)
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        body = body[: -len(f"  {PY_MARK}")]
        if body.strip() in _OWN_LINES:
            return ""
        for added in (f", {MONITOR_CALL}", f" {MONITOR_CALL},", MONITOR_CALL):
            if added in body:
                return body.replace(added, "", 1) + ending
        return line  # not ours after all: leave it
    return MARKED_PY_LINE.sub(restore, text)


# ------------------------------------------------------------------------------- checkouts on disk


@dataclass(frozen=True)
class Change:
    """One file of a checkout: its bytes before (None: it did not exist) and after."""

    path: str  # relative to the checkout, with "/"
    before: bytes | None
    after: bytes


@dataclass
class Plan:
    root: Path
    changes: list[Change]
    info: dict = field(default_factory=dict)


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InstallError(f"{where} is not UTF-8 text; this installer only edits UTF-8 files") from None


def one_line(text: str) -> str:
    return " ".join(text.split())


def acetrainer_index(root: Path) -> str:
    """The relative path of ACETrainer's page, or an error that says why ``root`` is not ACETrainer."""
    if not root.is_dir():
        raise InstallError(f"{root} is not a folder; pass the ACETrainer checkout (the folder with app.py)")
    index = next((rel for rel in INDEX_CANDIDATES if (root / rel).is_file()), None)
    if index is None:
        raise InstallError(f"{root} does not look like an ACETrainer checkout: it has neither "
                           f"{' nor '.join(INDEX_CANDIDATES)}")
    app_js = read_bytes(root / APP_JS)
    if app_js is None:
        raise InstallError(f"{root} does not look like an ACETrainer checkout: {APP_JS} is missing")
    if b"switchTab" not in app_js:
        raise InstallError(f"{root / APP_JS} has no switchTab function: not an ACETrainer version this installer knows")
    return index


def plan_tab(root: Path, dashboard_url: str | None) -> Plan:
    """The patched page and the new tab script of an ACETrainer checkout (nothing written)."""
    index = acetrainer_index(root)
    before = (root / index).read_bytes()
    text, tab = patch_page(decode(before, str(root / index)), dashboard_url, str(root / index))
    script = f"{Path(APP_JS).parent.as_posix()}/{TAB_SCRIPT}"
    if (root / script).exists():
        raise InstallError(f"{root / script} exists already and was not written by this installer; move it away")
    changes = [Change(index, before, text.encode("utf-8")), Change(script, None, TAB_JS_FILE.read_bytes())]
    return Plan(root, changes, {"kind": "acetrainer", "tab": tab, "dashboard_url": dashboard_url})


def trainer_path(acestep: Path) -> Path:
    path = acestep / "trainer.py" if acestep.is_dir() else acestep
    if not path.is_file() or path.suffix != ".py":
        raise InstallError(f"{acestep} is not an ACE-Step checkout: there is no trainer.py in it")
    return path


def plan_hookup(acestep: Path) -> Plan:
    path = trainer_path(acestep)
    before = path.read_bytes()
    after = patch_trainer(decode(before, str(path)), str(path)).encode("utf-8")
    return Plan(path.parent, [Change(path.name, before, after)], {"kind": "acestep"})


# ----------------------------------------------------------------------------- atomic writes, backups


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temp file in the same folder and ``os.replace``: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.acestep-viz-{os.getpid()}-{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return None


def put(root: Path, rel: str, data: bytes | None, mode: int | None = None) -> None:
    """Make ``root/rel`` hold ``data`` (None: not exist), keeping its permission bits."""
    path = root / rel
    if data is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, data, mode if mode is not None else file_mode(path))


def backup_dir(root: Path) -> Path:
    return root / BACKUP_DIR


def read_manifest(root: Path) -> dict | None:
    path = backup_dir(root) / MANIFEST
    if not path.is_file():
        if backup_dir(root).exists():
            raise InstallError(f"{backup_dir(root)} has no {MANIFEST}: an install stopped before it changed any "
                               "file; delete that folder and try again")
        return None
    try:
        manifest = json.loads(path.read_text("utf-8"))
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), list):
            raise ValueError("unknown format")
        return manifest
    except (ValueError, OSError) as exc:
        raise InstallError(f"{path} is unreadable ({exc}); restore the files from your checkout "
                           f"(e.g. git checkout) and delete {backup_dir(root)}") from None


def write_backup(plan: Plan) -> None:
    """Copies of the originals plus the manifest, written before any file of the checkout changes."""
    folder = backup_dir(plan.root)
    (folder / "files").mkdir(parents=True, exist_ok=False)
    entries = []
    for change in plan.changes:
        if change.before is not None:
            copy = folder / "files" / change.path
            copy.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(copy, change.before)
        entries.append({"path": change.path, "existed": change.before is not None,
                        "mode": file_mode(plan.root / change.path), "original_sha256": sha256(change.before),
                        "patched_sha256": sha256(change.after)})
    manifest = {"format": MANIFEST_FORMAT, "tool": "acestep-viz", "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **plan.info, "files": entries}
    write_atomic(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))


def apply(plan: Plan) -> None:
    """Back up, then write every change; if one fails, every file written so far is put back."""
    if backup_dir(plan.root).exists():
        raise InstallError(f"{backup_dir(plan.root)} exists already; uninstall first or delete it")
    try:
        write_backup(plan)
    except BaseException:
        shutil.rmtree(backup_dir(plan.root), ignore_errors=True)
        raise
    done: list[Change] = []
    try:
        for change in plan.changes:
            put(plan.root, change.path, change.after)
            done.append(change)
    except BaseException:
        for change in reversed(done):
            put(plan.root, change.path, change.before)
        shutil.rmtree(backup_dir(plan.root))
        raise


def file_state(root: Path, entry: dict) -> str:
    """"patched" (as we wrote it), "original" (as before the install) or "edited" (changed since)."""
    current = sha256(read_bytes(root / entry["path"]))
    if current == entry["patched_sha256"]:
        return "patched"
    if current == entry["original_sha256"]:
        return "original"
    return "edited"


def original_bytes(root: Path, entry: dict) -> bytes | None:
    if not entry["existed"]:
        return None
    data = read_bytes(backup_dir(root) / "files" / entry["path"])
    if sha256(data) != entry["original_sha256"]:
        raise InstallError(f"the backup of {entry['path']} in {backup_dir(root)} is missing or damaged; "
                           "restore that file from your checkout (e.g. git checkout) and delete the backup folder")
    return data


def without_our_changes(root: Path, entry: dict) -> bytes | None:
    """An edited file minus our marked insertions (the user's edits stay); a file we created goes."""
    if not entry["existed"]:
        return None
    path = root / entry["path"]
    text = decode(path.read_bytes(), str(path))
    return (unpatch_trainer(text) if path.suffix == ".py" else unpatch_page(text)).encode("utf-8")


def restore(root: Path, force: bool) -> list[str]:
    """Put every file of the manifest back as it was, then delete the backup folder; report lines."""
    manifest = read_manifest(root)
    if manifest is None:
        raise InstallError(f"nothing to uninstall in {root}: there is no {BACKUP_DIR}/{MANIFEST}")
    states = {entry["path"]: file_state(root, entry) for entry in manifest["files"]}
    edited = [path for path, state in states.items() if state == "edited"]
    if edited and not force:
        raise InstallError(f"{', '.join(edited)} in {root} changed since the install; restoring the originals would "
                           "lose those edits. Rerun with --force to take out only the acestep-viz blocks and keep "
                           f"your edits (a copy of each edited file is kept as NAME{EDITED_SUFFIX})")
    entries = {entry["path"]: entry for entry in manifest["files"] if states[entry["path"]] != "original"}
    # every backup is read and checked before the first file changes
    targets = {rel: original_bytes(root, entry) if states[rel] == "patched" else without_our_changes(root, entry)
               for rel, entry in entries.items()}
    report = []
    for rel, data in targets.items():
        if states[rel] == "edited":
            shutil.copy2(root / rel, root / (rel + EDITED_SUFFIX))
            report.append(f"took the acestep-viz blocks out of edited {rel} (copy before: {rel}{EDITED_SUFFIX})")
        else:
            report.append(f"{'restored' if entries[rel]['existed'] else 'removed'} {rel}")
        put(root, rel, data, entries[rel].get("mode"))
    shutil.rmtree(backup_dir(root))
    return report


def install_state(root: Path) -> dict | None:
    """The manifest when an install is in place, None when there is none; an error when half there."""
    manifest = read_manifest(root)
    if manifest is None:
        return None
    if all(file_state(root, entry) != "original" for entry in manifest["files"]):
        return manifest
    raise InstallError(f"{backup_dir(root)} is left from an earlier install whose changes are (partly) gone; run "
                       f"`acestep-viz acetrainer uninstall {root} --force` to clean it up, then install again")


# -------------------------------------------------------------------------------------- the commands


def install(path: str | Path, dashboard_url: str | None = None, acestep: str | Path | None = None,
            apply_plan: Callable[[Plan], None] = apply) -> list[str]:
    """Add the tab (and, with ``acestep``, the trainer.py hookup); return what was done, line by line."""
    root = Path(path).expanduser().resolve()
    acetrainer_index(root)
    check_dashboard_url(dashboard_url)
    plans, report = [], []
    existing = install_state(root)
    if existing is None:
        plans.append(plan_tab(root, dashboard_url))
    else:
        url = existing.get("dashboard_url") or f"on the page's host, port {DASHBOARD_PORT}"
        report.append(f"already installed in {root}: tab '{existing.get('tab')}', dashboard {url}; nothing changed "
                      f"(to change it: acestep-viz acetrainer uninstall {root}, then install again)")
    if acestep is not None:
        trainer = trainer_path(Path(acestep).expanduser().resolve())
        if install_state(trainer.parent) is None:
            plans.append(plan_hookup(trainer))
        else:
            report.append(f"already installed in {trainer}: the EmbeddingMonitor hookup; nothing changed")
    done: list[Plan] = []
    try:
        for plan in plans:
            apply_plan(plan)
            done.append(plan)
    except BaseException:
        for plan in reversed(done):
            restore(plan.root, force=False)
        raise
    for plan in plans:
        report.extend(describe(plan))
    if acestep is None:
        report.append(MANUAL_HOOKUP)
        sibling = root.parent / "ACE-Step" / "trainer.py"
        if sibling.is_file():
            report.append(f"(found {sibling}: `acestep-viz acetrainer install {root} --acestep {sibling.parent}` "
                          "does it for you)")
    return report


def describe(plan: Plan) -> list[str]:
    files = ", ".join(change.path for change in plan.changes)
    if plan.info["kind"] == "acetrainer":
        where = plan.info["dashboard_url"] or f"the page's host, port {DASHBOARD_PORT}"
        return [f"installed the '{plan.info['tab']}' tab in {plan.root} ({files}); it shows the dashboard at {where}",
                f"backups of the originals: {backup_dir(plan.root)}; undo with: acestep-viz acetrainer uninstall "
                f"{plan.root}"]
    return [f"added the EmbeddingMonitor hookup to {plan.root / files} (lines marked {PY_MARK!r}); "
            f"ACE-Step's Python must import acestep_viz: pip install /path/to/acestep-viz[trainer]"]


def uninstall(path: str | Path, acestep: str | Path | None = None, force: bool = False) -> list[str]:
    """Restore every file the install touched, byte for byte; return what was done, line by line."""
    roots = [Path(path).expanduser().resolve()]
    if acestep is not None:
        roots.append(trainer_path(Path(acestep).expanduser().resolve()).parent)
    for root in roots:  # check both before touching either
        if read_manifest(root) is None:
            raise InstallError(f"nothing to uninstall in {root}: there is no {BACKUP_DIR}/{MANIFEST}")
    report = []
    for root in roots:
        report.extend(restore(root, force))
        report.append(f"uninstalled acestep-viz from {root}")
    return report
