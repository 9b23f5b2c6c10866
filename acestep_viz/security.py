"""Optional CurveZMQ authentication and encryption for the ingest and query sockets.

``acestep-viz keys DIR`` makes the key pairs (``zmq.auth.create_certificates``)::

    DIR/server.key                  server public key   -> copy to every client
    DIR/server.key_secret           server key pair     -> stays with the collector
    DIR/client.key, client.key_secret                   -> trainer / dashboard / stats
    DIR/authorized_clients/*.key    public keys the collector lets in (client.key to begin with)

The collector (``--curve-dir DIR``) makes both of its sockets CURVE servers and runs a
``ThreadAuthenticator`` that admits only the public keys in ``DIR/authorized_clients``. Clients
(``ACESTEP_VIZ_CURVE_DIR``, ``--curve-dir``) load ``client.key_secret`` and ``server.key``. A
client without the right keys gets nothing through: ZeroMQ drops the handshake silently.
Pure functions on sockets and files; key files are text (``zmq.auth`` certificates), never pickled.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import zmq
import zmq.auth

from acestep_viz.settings import Setting, parse_bool

SERVER, CLIENT, AUTHORIZED = "server", "client", "authorized_clients"

ALLOW_REMOTE = Setting("allow_remote", False,
                       "allow binding to addresses other than loopback (exposes the ports; off by default)",
                       parse=parse_bool)
CURVE_DIR = Setting("curve_dir", None,
                    "folder of CurveZMQ keys from `acestep-viz keys DIR`: the collector encrypts ingest and query "
                    "and admits only keys in DIR/authorized_clients; clients (dashboard, stats) use its client keys")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_problem(endpoint_or_host: str, allow_remote: bool) -> str | None:
    """A message when a bind address is not loopback and --allow-remote was not given."""
    if allow_remote:
        return None
    if endpoint_or_host.startswith(("ipc://", "inproc://")):
        return None
    host = urlparse(endpoint_or_host).hostname if "://" in endpoint_or_host else endpoint_or_host
    if host and is_loopback_host(host):
        return None
    return (f"{endpoint_or_host} is not a loopback address; binding it exposes the port to the network. "
            f"Pass --allow-remote (or set ACESTEP_VIZ_ALLOW_REMOTE=1) if that is what you want")


class SecurityError(ValueError):
    """Keys missing or unreadable; the message says what to fix."""


def create_keys(directory: str | os.PathLike, force: bool = False) -> list[Path]:
    """Make a server and a client key pair in ``directory`` and authorize the client."""
    if not zmq.has("curve"):
        raise SecurityError("this libzmq has no CURVE support; install pyzmq from its wheels")
    root = Path(directory)
    existing = [root / name for name in (f"{SERVER}.key_secret", f"{CLIENT}.key_secret") if (root / name).exists()]
    if existing and not force:
        raise SecurityError(f"{existing[0]} already exists; pass --force to replace the keys "
                            "(every client then needs the new ones)")
    root.mkdir(parents=True, exist_ok=True)
    (root / AUTHORIZED).mkdir(exist_ok=True)
    made = []
    for name in (SERVER, CLIENT):
        public, secret = zmq.auth.create_certificates(str(root), name)
        os.chmod(secret, 0o600)
        made += [Path(public), Path(secret)]
    shutil.copy(root / f"{CLIENT}.key", root / AUTHORIZED / f"{CLIENT}.key")
    made.append(root / AUTHORIZED / f"{CLIENT}.key")
    return made


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise SecurityError(f"{path} not found; make keys with `acestep-viz keys {path.parent}`")
    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read the key file {path}: {exc}") from None
    if secret and not secret_key:
        raise SecurityError(f"{path} holds no secret key")
    return public, secret_key


def authorized_dir(directory: str | os.PathLike) -> Path:
    path = Path(directory) / AUTHORIZED
    if not path.is_dir() or not any(path.glob("*.key")):
        raise SecurityError(f"{path} holds no client public keys (*.key); `acestep-viz keys {directory}` makes one")
    return path


def check_server_keys(directory: str | os.PathLike) -> None:
    """Raise ``SecurityError`` unless a collector could start with ``directory``."""
    _load(Path(directory) / f"{SERVER}.key_secret", secret=True)
    authorized_dir(directory)


def check_client_keys(directory: str | os.PathLike) -> None:
    _load(Path(directory) / f"{CLIENT}.key_secret", secret=True)
    _load(Path(directory) / f"{SERVER}.key", secret=False)


def make_server(sock: zmq.Socket, directory: str | os.PathLike) -> None:
    """Configure ``sock`` (before ``bind``) as a CURVE server with the collector's key pair."""
    public, secret = _load(Path(directory) / f"{SERVER}.key_secret", secret=True)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_server = True


def make_client(sock: zmq.Socket, directory: str | os.PathLike) -> None:
    """Configure ``sock`` (before ``connect``) as a CURVE client that trusts the collector's key."""
    public, secret = _load(Path(directory) / f"{CLIENT}.key_secret", secret=True)
    server_public, _ = _load(Path(directory) / f"{SERVER}.key", secret=False)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server_public


def start_authenticator(context: zmq.Context, directory: str | os.PathLike):
    """A running ``ThreadAuthenticator`` that admits the public keys in ``DIR/authorized_clients``."""
    from zmq.auth.thread import ThreadAuthenticator

    location = authorized_dir(directory)
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(location))
    return auth
