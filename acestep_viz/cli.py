"""`acestep-viz`: the command line. Subcommands import their heavy parts only when they run."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
from pathlib import Path
from typing import Sequence

from acestep_viz import __version__, security
from acestep_viz.collector import options as collector_options
from acestep_viz.dashboard import options as dashboard_options
from acestep_viz.processes import on_stop_signals
from acestep_viz.settings import SettingError, add_arguments, resolve
from acestep_viz.trainer_plugin import settings as trainer_options
from acestep_viz.wire import SPACES

PROG = "acestep-viz"
# `up` takes every collector setting, these of the dashboard and the demo's length and model.
UP_UI_SETTINGS = (dashboard_options.HOST, dashboard_options.PORT, dashboard_options.INTERVAL,
                  dashboard_options.URL_PREFIX, dashboard_options.AUDIO_ROOT, trainer_options.STEPS,
                  trainer_options.MODEL, trainer_options.COMPARE)


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def trainer_settings():
    return {s.name: s for s in trainer_options.TRAINER_SETTINGS}


def demo_settings():
    trainer = trainer_settings()
    return (trainer["endpoint"], trainer["run"], *trainer_options.DEMO_SETTINGS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Live PaCMAP maps of ACE-Step LoRA training.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("collector", help="run the collector sidecar (ingest, projections, queries)")
    add_arguments(p, collector_options.COLLECTOR_SETTINGS)

    p = sub.add_parser("dashboard", help="run the web dashboard")
    add_arguments(p, dashboard_options.DASHBOARD_SETTINGS)

    p = sub.add_parser("demo", help="train the ACE-Step-shaped twin on CPU with the monitor attached")
    p.add_argument("--endpoint", default=None, help="where frames go (default tcp://127.0.0.1:5557) "
                                                    "[env ACESTEP_VIZ_ENDPOINT]")
    p.add_argument("--run", default=None, help="run name (default demo-<time>) [env ACESTEP_VIZ_RUN]")
    add_arguments(p, trainer_options.DEMO_SETTINGS)

    p = sub.add_parser("up", help="start collector + dashboard (+ the demo) and print the dashboard URL")
    p.add_argument("--demo", action="store_true", default=None, help="also start a demo training run")
    add_arguments(p, [*collector_options.COLLECTOR_SETTINGS, *UP_UI_SETTINGS])

    p = sub.add_parser("runs", help="list the runs kept in the store, or delete one's stored data")
    add_arguments(p, [collector_options.STORE, dashboard_options.COLLECTOR_ENDPOINT, security.CURVE_DIR])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--delete", metavar="RUN", default=None,
                   help="delete RUN's stored frames, maps and exports (cannot be undone; clear only empties the view)")

    for name, what in (("clear", "empty the live maps of a run or a space (the stored frames stay, exportable)"),
                       ("refit", "ask for a full PaCMAP fit of a run or a space now")):
        p = sub.add_parser(name, help=what)
        add_arguments(p, [dashboard_options.COLLECTOR_ENDPOINT, security.CURVE_DIR])
        p.add_argument("--run", default=None, help="the run (default: every run)")
        p.add_argument("--space", default=None, choices=SPACES, help="one space (default: all three)")

    p = sub.add_parser("export", help="write a run to NPZ, TensorBoard projector files, a self-contained HTML "
                                      "or an animated GIF of its map history")
    add_arguments(p, [dashboard_options.COLLECTOR_ENDPOINT, security.CURVE_DIR])
    p.add_argument("--run", default=None, help="run to export (default: the latest active)")
    p.add_argument("--format", required=True, choices=("npz", "tensorboard", "html", "gif"))
    p.add_argument("--out", default=None, help="where to put the result (default: the collector's store for "
                                               "npz/tensorboard/gif, ./<run>.html for html)")

    p = sub.add_parser("stats", help="print the collector's live statistics")
    add_arguments(p, [dashboard_options.COLLECTOR_ENDPOINT, security.CURVE_DIR])
    p.add_argument("--json", action="store_true", help="print the raw JSON")

    p = sub.add_parser("keys", help="make CurveZMQ key pairs (server and client) for --curve-dir")
    p.add_argument("dir", metavar="DIR", help="folder for the keys (created if missing)")
    p.add_argument("--force", action="store_true", help="replace existing keys")

    p = sub.add_parser("settings", help="list every setting: flag, environment variable, default")
    p.add_argument("--markdown", action="store_true", help="print the Markdown of docs/settings.md")
    p.add_argument("--out", default=None, metavar="PATH", help="write to PATH instead of printing")

    p = sub.add_parser("acetrainer", help="add (or remove) the live embeddings tab in an ACETrainer checkout")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("install", help="add the tab (and, with --acestep, the trainer.py hookup)")
    a.add_argument("path", metavar="PATH", help="the ACETrainer checkout (the folder with app.py)")
    a.add_argument("--dashboard-url", default=None, metavar="URL",
                   help="dashboard URL for the tab (default: the ACETrainer page's host, port 8050)")
    a.add_argument("--acestep", default=None, metavar="PATH",
                   help="ACE-Step checkout whose trainer.py gets the marked EmbeddingMonitor hookup")
    a = actions.add_parser("uninstall", help="restore every file the install touched, byte for byte")
    a.add_argument("path", metavar="PATH", help="the ACETrainer checkout")
    a.add_argument("--acestep", default=None, metavar="PATH", help="also undo the trainer.py hookup there")
    a.add_argument("--force", action="store_true",
                   help="files edited since the install: take out only the acestep-viz blocks, keep the edits")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    commands = {"collector": cmd_collector, "dashboard": cmd_dashboard, "demo": cmd_demo, "up": cmd_up,
                "stats": cmd_stats, "keys": cmd_keys, "acetrainer": cmd_acetrainer, "runs": cmd_runs,
                "export": cmd_export, "settings": cmd_settings, "clear": cmd_control, "refit": cmd_control}
    try:
        return commands[args.command](vars(args))
    except (SettingError, CliError, OSError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def check_binds(pairs: Sequence[str], allow_remote: bool) -> None:
    for address in pairs:
        problem = security.bind_problem(address, allow_remote)
        if problem:
            raise CliError(problem)
    if allow_remote:
        logging.getLogger("acestep_viz").warning("--allow-remote: ports may be reachable from other machines")


def cmd_collector(flags: dict) -> int:
    from acestep_viz.collector.placement import RefitPolicy
    from acestep_viz.collector.service import Collector

    cfg = resolve(collector_options.COLLECTOR_SETTINGS, flags)
    check_binds([cfg["ingest"], cfg["query"]], cfg["allow_remote"])
    check_curve_dir(cfg["curve_dir"], server=True)
    collector = Collector(curve_dir=cfg["curve_dir"], ingest=cfg["ingest"], query=cfg["query"], store_dir=cfg["store"],
                          buffer_size=cfg["buffer_size"], n_neighbors=cfg["n_neighbors"],
                          prompt_variants_per_clip=cfg["prompt_variants_per_clip"],
                          projection_interval_s=cfg["projection_interval_s"],
                          max_fit_points=cfg["max_fit_points"], history_size=cfg["history_size"],
                          retention_days=cfg["retention_days"], retention_max_mb=cfg["retention_max_mb"],
                          numba_cache_dir=cfg["numba_cache_dir"],
                          refit_policy=RefitPolicy(cfg["refit_new_share"], cfg["refit_interval_s"]))
    with collector:
        on_stop_signals(collector.stop_event.set)
        print(f"collector: ingest {cfg['ingest']}  query {cfg['query']}  store {cfg['store']}", flush=True)
        collector.wait()
    return 0


def check_curve_dir(directory: str | None, server: bool) -> None:
    """CurveZMQ keys must be complete before any socket is made; a gap is a one-line CliError."""
    if not directory:
        return
    try:
        (security.check_server_keys if server else security.check_client_keys)(directory)
    except security.SecurityError as exc:
        raise CliError(str(exc)) from None


def cmd_keys(flags: dict) -> int:
    try:
        made = security.create_keys(flags["dir"], force=flags["force"])
    except security.SecurityError as exc:
        raise CliError(str(exc)) from None
    print("\n".join(str(path) for path in made))
    print(f"collector: --curve-dir {flags['dir']}  (keep server.key_secret there)\n"
          f"trainer, dashboard, stats: ACESTEP_VIZ_CURVE_DIR={flags['dir']} or --curve-dir, with client.key_secret "
          "and server.key (copy only those two to other machines)", flush=True)
    return 0


def cmd_dashboard(flags: dict) -> int:
    cfg = resolve(dashboard_options.DASHBOARD_SETTINGS, flags)
    check_binds([cfg["host"]], cfg["allow_remote"])
    from acestep_viz.dashboard.app import serve

    check_curve_dir(cfg["curve_dir"], server=False)
    if not cfg["token"] and not security.is_loopback_host(cfg["host"]):
        logging.getLogger("acestep_viz").warning(
            "the dashboard on %s has no --token: anyone who can reach the port can see and clear runs", cfg["host"])
    serve(collector=cfg["collector"], host=cfg["host"], port=cfg["port"], interval_s=cfg["interval"],
          curve_dir=cfg["curve_dir"], token=cfg["token"], url_prefix=cfg["url_prefix"], audio_roots=cfg["audio_root"],
          alert_settings={s.name: cfg[s.name] for s in dashboard_options.ALERT_SETTINGS})
    return 0


def cmd_demo(flags: dict) -> int:
    from acestep_viz.trainer_plugin.demo.compare import demo_runs

    cfg = resolve(demo_settings(), flags)
    if cfg["model"] == "acestep15":
        from acestep_viz.trainer_plugin.demo.acestep15.run import default_run_name, run_demo
    else:
        from acestep_viz.trainer_plugin.demo.run import default_run_name, run_demo

    for run, lr in demo_runs(cfg["run"] or default_run_name(), cfg["compare"], cfg["lr"]):
        summary = run_demo(endpoint=cfg["endpoint"], steps=cfg["steps"], run=run, lr=lr, audio_dir=cfg["audio_dir"])
        print(json.dumps(summary, default=str), flush=True)
    return 0


def cmd_stats(flags: dict) -> int:
    cfg = resolve([dashboard_options.COLLECTOR_ENDPOINT, security.CURVE_DIR], flags)
    check_curve_dir(cfg["curve_dir"], server=False)
    stats = ask(cfg["collector"], {"op": "stats"}, curve_dir=cfg["curve_dir"])
    print(json.dumps(stats, indent=2) if flags.get("json") else format_stats(stats))
    return 0


def ask(endpoint: str, request: dict, timeout_ms: int = 2000, curve_dir: str | None = None) -> dict:
    """One request to the collector; a missing collector or a refused request is a CliError."""
    from acestep_viz.dashboard.client import CollectorClient, CollectorError, CollectorUnavailable

    try:
        return CollectorClient(endpoint, timeout_ms=timeout_ms, curve_dir=curve_dir).request(request)
    except CollectorUnavailable as exc:
        raise CliError(f"{exc}; or pass --collector (and --curve-dir if it uses keys)") from None
    except CollectorError as exc:
        raise CliError(f"the collector at {endpoint} refused the request: {exc}") from None


def cmd_runs(flags: dict) -> int:
    from acestep_viz.collector.store import stored_runs

    cfg = resolve([collector_options.STORE], flags)
    if flags.get("delete"):
        return delete_run(flags["delete"], flags)
    rows = stored_runs(cfg["store"])
    if flags.get("json"):
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no runs in {cfg['store']}")
    else:
        import datetime
        for r in rows:
            when = datetime.datetime.fromtimestamp(r["modified"]).strftime("%Y-%m-%d %H:%M")
            print(f"{r['run']:<40} {when}  {r['mb']:>9.2f} MB  {r['path']}")
    return 0


def delete_run(run: str, flags: dict) -> int:
    """Through the collector when one answers (its live view drops the run too), else in the store itself."""
    from acestep_viz.collector.store import LOG_NAME, run_dir_name
    from acestep_viz.dashboard.client import CollectorClient, CollectorError, CollectorUnavailable

    cfg = resolve([collector_options.STORE, dashboard_options.COLLECTOR_ENDPOINT, security.CURVE_DIR], flags)
    try:
        reply = CollectorClient(cfg["collector"], curve_dir=cfg["curve_dir"]).request({"op": "delete", "run": run})
    except CollectorUnavailable:
        folder = Path(cfg["store"]) / run_dir_name(run)
        if not (folder / LOG_NAME).exists():
            raise CliError(f"no run named {run!r} in {cfg['store']} (see `{PROG} runs`)") from None
        shutil.rmtree(folder)
        print(f"deleted {folder}")
        return 0
    except CollectorError as exc:
        raise CliError(str(exc)) from None
    print(f"deleted run {reply['deleted']!r} (collector at {cfg['collector']})")
    return 0


def cmd_control(flags: dict) -> int:
    """``clear`` and ``refit``: one request to the collector, named after the command."""
    from acestep_viz.dashboard.client import CollectorClient, CollectorError

    cfg = resolve([dashboard_options.COLLECTOR_ENDPOINT, security.CURVE_DIR], flags)
    check_curve_dir(cfg["curve_dir"], server=False)
    request = {"op": flags["command"], "run": flags["run"], "space": flags["space"]}
    try:
        CollectorClient(cfg["collector"], curve_dir=cfg["curve_dir"]).request(request)
    except CollectorError as exc:
        raise CliError(str(exc)) from None
    what = f"run {flags['run']!r}" if flags["run"] else "every run"
    done = "cleared (stored frames kept)" if flags["command"] == "clear" else "queued for a full fit"
    print(f"{what}, {flags['space'] or 'all spaces'}: {done}")
    return 0


def cmd_export(flags: dict) -> int:
    cfg = resolve([dashboard_options.COLLECTOR_ENDPOINT, security.CURVE_DIR], flags)
    check_curve_dir(cfg["curve_dir"], server=False)
    if flags["format"] == "html":
        from acestep_viz.collector.store import run_dir_name
        from acestep_viz.dashboard.export_callbacks import snapshot_html

        snap = ask(cfg["collector"], {"op": "snapshot", "run": flags.get("run"), "since": None},
                   curve_dir=cfg["curve_dir"])
        if not snap.get("run"):
            raise CliError("the collector has no runs to export")
        out = flags.get("out") or f"{run_dir_name(snap['run'])}.html"  # a file name valid on every system
        Path(out).write_text(snapshot_html(snap), encoding="utf-8")
        print(out)
        return 0
    reply = ask(cfg["collector"], {"op": "export", "run": flags.get("run"), "format": flags["format"]}, 60000,
                cfg["curve_dir"])
    path = reply["path"]
    if flags.get("out"):
        shutil.copytree(path, flags["out"], dirs_exist_ok=True)
        path = flags["out"]
    print(path)
    return 0


def format_stats(stats: dict) -> str:
    lines = [f"uptime {stats['uptime_s']:.0f} s  frames received {stats['frames_received']}  "
             f"accepted {stats['frames_accepted']}  projections {'paused' if stats['paused'] else 'on'}"
             + ("  (PaCMAP warming up)" if stats.get("warming_up") else "")]
    rejects = stats.get("rejects") or {}
    lines.append("rejects: " + (", ".join(f"{k} {v}" for k, v in sorted(rejects.items())) or "none"))
    dropped = stats.get("dropped_rows") or {}  # rows left out of accepted frames (NaN/Inf)
    if dropped:
        lines.append("dropped rows: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
    header = f"{'run':<28} {'space':<7} {'received':>9} {'buffered':>9} {'projected':>9} {'last step':>9} {'fit s':>6}"
    lines.append(header)
    for run, spaces in stats.get("runs", {}).items():
        for space, s in spaces.items():
            fit = f"{s['last_projection_s']:.2f}" if s.get("last_projection_s") is not None else "-"
            lines.append(f"{run[:28]:<28} {space:<7} {s['received']:>9} {s['buffered']:>9} "
                         f"{s['projected']:>9} {s['last_step']:>9} {fit:>6}")
    return "\n".join(lines)


def cmd_settings(flags: dict) -> int:
    from acestep_viz import settings_docs

    text = settings_docs.settings_markdown() if flags["markdown"] else settings_docs.settings_text()
    if flags["out"]:
        with open(flags["out"], "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        print(f"wrote {flags['out']}", flush=True)
    else:
        sys.stdout.write(text)
    return 0


def cmd_acetrainer(flags: dict) -> int:
    from acestep_viz.acetrainer import installer as acetrainer

    try:
        if flags["action"] == "install":
            report = acetrainer.install(flags["path"], dashboard_url=flags["dashboard_url"], acestep=flags["acestep"])
        else:
            report = acetrainer.uninstall(flags["path"], acestep=flags["acestep"], force=flags["force"])
    except acetrainer.InstallError as exc:
        raise CliError(str(exc)) from None
    print("\n".join(report), flush=True)
    return 0


def cmd_up(flags: dict) -> int:
    from acestep_viz.launcher import Stack

    collector_cfg = resolve(collector_options.COLLECTOR_SETTINGS, flags)
    check_curve_dir(collector_cfg["curve_dir"], server=True)
    if collector_cfg["curve_dir"]:
        check_curve_dir(collector_cfg["curve_dir"], server=False)  # the dashboard and demo need client keys
    ui_cfg = resolve(UP_UI_SETTINGS, flags)
    check_binds([collector_cfg["ingest"], collector_cfg["query"], ui_cfg["host"]], collector_cfg["allow_remote"])
    stack = Stack(collector_cfg, ui_cfg, demo=bool(flags.get("demo")))
    stopping = threading.Event()
    on_stop_signals(stopping.set)
    with stack:
        stack.start()
        print(f"\n  Dashboard: {stack.url}\n", flush=True)
        return stack.supervise(stopping)


if __name__ == "__main__":
    sys.exit(main())
