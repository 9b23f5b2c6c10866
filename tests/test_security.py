"""Exposure: loopback by default, optional CurveZMQ on ingest and query, optional dashboard token."""
from __future__ import annotations

import logging
import time

import pytest
import zmq
from acestep_viz.dashboard.client import CollectorClient, CollectorUnavailable
from acestep_viz.trainer_plugin.publisher import Publisher
from support import CollectorProcess, synthetic_frames, wait_for

from acestep_viz import cli
from acestep_viz.wire import encode


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    assert cli.main(["keys", str(root / "good")]) == 0
    assert cli.main(["keys", str(root / "other")]) == 0  # a valid pair the collector does not know
    return root / "good", root / "other"


@pytest.fixture(scope="module")
def curve_collector(keys, tmp_path_factory):
    good, _ = keys
    proc = CollectorProcess(tmp_path_factory.mktemp("curve-store") / "store",
                            extra_args=["--curve-dir", str(good), "--projection-interval-s", "3600"])
    proc.start()
    client = CollectorClient(proc.query, timeout_ms=1000, curve_dir=str(good))

    def answers():
        if not proc.alive():
            raise RuntimeError(proc.log_text())
        try:
            return client.stats()
        except CollectorUnavailable:
            return None
    try:
        wait_for(answers, timeout=60, interval=0.3)
        yield proc
    finally:
        proc.stop()


def test_keys_makes_server_and_client_pairs_and_refuses_to_overwrite(tmp_path, capsys):
    assert cli.main(["keys", str(tmp_path / "k")]) == 0
    names = sorted(p.relative_to(tmp_path / "k").as_posix() for p in (tmp_path / "k").rglob("*") if p.is_file())
    assert names == ["authorized_clients/client.key", "client.key", "client.key_secret", "server.key",
                     "server.key_secret"]
    assert (tmp_path / "k" / "server.key_secret").stat().st_mode & 0o077 == 0
    assert cli.main(["keys", str(tmp_path / "k")]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["keys", str(tmp_path / "k"), "--force"]) == 0


@pytest.mark.slow
def test_query_needs_the_keys(curve_collector, keys):
    good, other = keys
    assert CollectorClient(curve_collector.query, timeout_ms=2000, curve_dir=str(good)).stats()["ok"]
    with pytest.raises(CollectorUnavailable):
        CollectorClient(curve_collector.query, timeout_ms=1000).stats()  # no keys: no handshake, no reply
    with pytest.raises(CollectorUnavailable):
        CollectorClient(curve_collector.query, timeout_ms=1000, curve_dir=str(other)).stats()  # unknown key


def received(collector, good) -> int:
    return CollectorClient(collector.query, timeout_ms=2000, curve_dir=str(good)).stats()["frames_received"]


@pytest.mark.slow
def test_ingest_without_keys_gets_nothing_in(curve_collector, keys):
    good, other = keys
    before = received(curve_collector, good)
    frames = synthetic_frames(run="intruder", n_clips=12, steps=1)
    # a raw publisher without keys: the collector never subscribes, frames go nowhere
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(curve_collector.ingest)
    try:
        assert sock.poll(2000) == 0  # no subscription message: the handshake failed
        for frame in frames:
            sock.send_multipart(encode(frame))
    finally:
        sock.close()
    # the trainer's publisher with a key pair the collector does not authorize
    with Publisher(curve_collector.ingest, curve_dir=str(other)) as publisher:
        for frame in frames:
            publisher.publish(frame)
        time.sleep(1.5)  # give any frame time to arrive; the assert below is on counts
        assert publisher.stats()["subscribed"] is False
    assert received(curve_collector, good) == before
    assert "intruder" not in CollectorClient(curve_collector.query, curve_dir=str(good)).stats()["runs"]


@pytest.mark.slow
def test_ingest_with_keys_from_the_environment_gets_in(curve_collector, keys, monkeypatch):
    good, _ = keys
    monkeypatch.setenv("ACESTEP_VIZ_CURVE_DIR", str(good))
    frames = synthetic_frames(run="trusted", n_clips=12, steps=1)
    client = CollectorClient(curve_collector.query, timeout_ms=2000, curve_dir=str(good))
    with Publisher(curve_collector.ingest) as publisher:
        assert publisher.curve_dir == str(good)
        wait_for(lambda: publisher.stats()["subscribed"], timeout=20)
        for frame in frames:
            publisher.publish(frame)
        runs = wait_for(lambda: (lambda r: r if r.get("trusted", {}).get("lora", {}).get("buffered") == 36 else None)(
            client.stats()["runs"]), timeout=30)
    assert runs["trusted"]["latent"]["buffered"] == 12


def test_missing_keys_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="acestep-viz keys"):
        Publisher("tcp://127.0.0.1:5999", curve_dir=str(tmp_path / "none"))
    assert cli.main(["stats", "--curve-dir", str(tmp_path / "none")]) == 2
    assert cli.main(["collector", "--curve-dir", str(tmp_path / "none"), "--store", str(tmp_path / "s")]) == 2


def test_everything_binds_to_loopback_unless_allowed(tmp_path, capsys):
    assert cli.main(["collector", "--ingest", "tcp://0.0.0.0:5557", "--store", str(tmp_path)]) == 2
    assert cli.main(["dashboard", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_dashboard_on_a_public_host_without_token_warns(monkeypatch, caplog):
    import acestep_viz.dashboard.app as dashboard_app

    served = {}
    monkeypatch.setattr(dashboard_app, "serve", lambda **kw: served.update(kw))
    with caplog.at_level(logging.WARNING, logger="acestep_viz"):
        assert cli.main(["dashboard", "--host", "0.0.0.0", "--allow-remote"]) == 0
    assert "no --token" in caplog.text and served["token"] is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="acestep_viz"):
        assert cli.main(["dashboard", "--host", "0.0.0.0", "--allow-remote", "--token", "s3cret"]) == 0
    assert "no --token" not in caplog.text and served["token"] == "s3cret"


def test_dashboard_token_is_required_when_set():
    from acestep_viz.dashboard.app import create_app

    http = create_app("tcp://127.0.0.1:5999", interval_s=5, token="s3cret").server.test_client()
    assert http.get("/").status_code == 401
    assert http.get("/_dash-layout").status_code == 401
    assert http.get("/?token=wrong").status_code == 401
    assert http.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = http.get("/?token=s3cret")
    assert first.status_code == 200 and "acestep_viz_token" in first.headers.get("Set-Cookie", "")
    assert "HttpOnly" in first.headers["Set-Cookie"]
    assert http.get("/_dash-layout").status_code == 200  # the cookie carries it from now on
    open_app = create_app("tcp://127.0.0.1:5999", interval_s=5).server.test_client()
    assert open_app.get("/").status_code == 200  # no token configured: nothing changes
