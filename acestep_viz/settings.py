"""Settings: each declared once (name, default, help), read from flags or ACESTEP_VIZ_* variables.

A ``Setting`` knows its CLI flag and environment variable, parses and validates its value and
says what to fix when the value is wrong. ``resolve`` applies the order
flag > environment variable > default. Both the trainer side and the sidecars declare their
settings with this module (it needs only the standard library); ``settings_docs`` renders them
as the tables of docs/settings.md. The few settings several processes share are declared at the end.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

ENV_PREFIX = "ACESTEP_VIZ_"


class SettingError(ValueError):
    """A setting has a value that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Setting:
    name: str  # snake_case; flag --name-with-dashes, variable ACESTEP_VIZ_NAME
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    check: Callable[[Any], str | None] | None = None  # returns a problem description or None
    doc_default: str | None = None  # the default as documented, where the value depends on the machine
    several: bool = False  # a list of folders: the flag repeats, the variable separates them with os.pathsep

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def convert(self, raw: Any, source: str) -> Any:
        if self.several:
            parts = raw.split(os.pathsep) if isinstance(raw, str) else list(raw)
            return tuple(self._convert_one(part, source) for part in parts if part not in ("", None))
        return self._convert_one(raw, source)

    def _convert_one(self, raw: Any, source: str) -> Any:
        try:
            value = self.parse(raw) if isinstance(raw, str) else raw
        except (TypeError, ValueError) as exc:
            raise SettingError(f"{source}: cannot read {raw!r} ({exc}); {self.help}") from None
        problem = self.check(value) if self.check else None
        if problem:
            raise SettingError(f"{source}={raw!r}: {problem}")
        return value


def url_path(raw: str) -> str:
    """"viz", "/viz" or "/viz/" -> "/viz/": a path prefix with a leading and a trailing slash."""
    stripped = str(raw or "/").strip().strip("/")
    return f"/{stripped}/" if stripped else "/"


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false, 1/0, yes/no or on/off")


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def at_least(minimum: float) -> Callable[[Any], str | None]:
    return lambda value: None if value >= minimum else f"must be at least {minimum}"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def existing_folder(value: str) -> str | None:
    return None if os.path.isdir(value) else "no such folder: create it or fix the path"


def zmq_endpoint(value: str) -> str | None:
    if not isinstance(value, str) or not value.startswith(("tcp://", "ipc://", "inproc://")):
        return "must be a ZeroMQ endpoint such as tcp://127.0.0.1:5557"
    if value.startswith("tcp://"):
        host, _, port = value[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return "must look like tcp://HOST:PORT with a port between 1 and 65535"
    return None


def add_arguments(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    """Add one flag per setting. Defaults stay None so the environment can fill them in."""
    for setting in settings:
        if setting.parse is parse_bool:
            parser.add_argument(setting.flag, dest=setting.name, action="store_const", const=True,
                                default=None, help=f"{setting.help} [env {setting.env}]")
        elif setting.several:
            parser.add_argument(setting.flag, dest=setting.name, action="append", default=None, metavar="DIR",
                                help=f"{setting.help} (repeat the flag for several) [env {setting.env}, "
                                     f"separated by {os.pathsep!r}]")
        else:
            parser.add_argument(setting.flag, dest=setting.name, default=None,
                                help=f"{setting.help} (default: {setting.default!r}) [env {setting.env}]")


def resolve(settings: Iterable[Setting], flags: Mapping[str, Any] | None = None,
            environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return {name: value} from flags, then environment, then defaults; validate each."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in settings:
        if flags.get(setting.name) is not None:
            values[setting.name] = setting.convert(flags[setting.name], setting.flag)
        elif environ.get(setting.env) not in (None, ""):
            values[setting.name] = setting.convert(environ[setting.env], setting.env)
        else:
            values[setting.name] = setting.default
    return values


# Settings that more than one process reads: the collector binds the query endpoint and keeps the store;
# the dashboard, the command line and a trainer with autostart (trainer_plugin/autostart.py) find it by them.
def default_store_dir() -> str:
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return os.path.join(os.environ["LOCALAPPDATA"], "acestep-viz", "runs")
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "acestep-viz", "runs")


STORE_DIR_DOC = ("`~/.local/share/acestep-viz/runs` (`$XDG_DATA_HOME/acestep-viz/runs` when set; "
                 "Windows: `%LOCALAPPDATA%\\acestep-viz\\runs`)")
DEFAULT_QUERY = "tcp://127.0.0.1:5558"  # the collector binds it, the dashboard and the command line connect
STORE = Setting("store", default_store_dir(), "directory of the durable run logs (one folder per run)",
                doc_default=STORE_DIR_DOC)
COLLECTOR_ENDPOINT = Setting("collector", DEFAULT_QUERY, "the collector's query endpoint", check=zmq_endpoint)
