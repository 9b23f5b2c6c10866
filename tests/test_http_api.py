"""The dashboard's HTTP JSON API against a real collector and dashboard on loopback ports."""
from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from support import CollectorProcess, DashboardProcess, free_port, query, send_frames, synthetic_frames, wait_for

pytestmark = pytest.mark.slow


def reachable(url: str, headers: dict) -> int | None:
    try:
        return call(url, headers=headers)[0]
    except urllib.error.URLError:  # not listening yet
        return None


def call(url: str, method: str = "GET", body=None, headers: dict | None = None,
         content_type: str = "application/json") -> tuple[int, bytes, str]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return reply.status, reply.read(), reply.headers.get_content_type()
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get_content_type()


def json_of(result) -> dict:
    status, raw, kind = result
    assert kind == "application/json", (status, raw[:200])
    return json.loads(raw)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("api")
    with CollectorProcess(base / "store") as collector:
        collector.wait_ready(projections=False)
        send_frames(collector.ingest, synthetic_frames(run="api-run", n_clips=12, steps=2))
        send_frames(collector.ingest, synthetic_frames(run="other-run", n_clips=12, steps=1, seed=4))
        wait_for(lambda: {"api-run", "other-run"} <= set(query(collector.query, {"op": "stats"})["runs"]), timeout=30)
        with DashboardProcess(collector.query, log_dir=base) as dashboard:
            dashboard.wait_ready()
            yield collector, dashboard.url + "api/"


def test_status_and_runs(stack):
    _, api = stack
    status = json_of(call(api + "status"))
    assert status["ok"] and {"api-run", "other-run"} <= set(status["runs"])
    runs = json_of(call(api + "runs"))
    assert {"api-run", "other-run"} <= {row["run"] for row in runs["runs"]}


def test_exports_come_back_as_files(stack):
    _, api = stack
    status, raw, kind = call(api + "export?format=npz&run=api-run")
    assert status == 200
    with np.load(io.BytesIO(raw)) as npz:
        assert len(npz["lora_vectors"]) == 72 and len(npz["latent_vectors"]) == 12
    status, raw, kind = call(api + "export?format=html&run=api-run")
    assert status == 200 and kind == "text/html" and b"plotly" in raw.lower()
    status, raw, kind = call(api + "export?format=tensorboard&run=api-run")
    assert status == 200 and kind == "application/zip" and raw[:2] == b"PK"


@pytest.mark.parametrize("path, method, body, code, words", [
    ("export?format=pdf&run=api-run", "GET", None, 400, "format must be one of"),
    ("export?format=npz&run=no-such-run", "GET", None, 404, "no run named 'no-such-run'"),
    ("clear", "POST", {"run": "api-run", "space": "video"}, 400, "space must be one of"),
    ("clear", "POST", {"run": "no-such-run", "space": None}, 404, "no run named 'no-such-run'"),
    ("clear", "POST", {"runs": "api-run"}, 400, "unknown field(s) runs"),
    ("refit", "POST", ["api-run"], 400, "must be a JSON object"),
    ("clear", "POST", b"{not json", 400, "not valid JSON"),
    ("runs/no-such-run", "DELETE", None, 404, "no run named 'no-such-run'"),
])
def test_bad_requests_get_a_4xx_naming_what_is_wrong(stack, path, method, body, code, words):
    _, api = stack
    status, raw, kind = call(api + path, method, body)
    assert status == code and kind == "application/json"
    reply = json.loads(raw)
    assert reply["ok"] is False and words in reply["error"]


def test_a_body_that_is_not_json_is_refused(stack):
    _, api = stack
    status, raw, _ = call(api + "clear", "POST", b"run=api-run", content_type="application/x-www-form-urlencoded")
    assert status == 415 and b"Content-Type: application/json" in raw


def test_clear_refit_and_delete_act_on_the_named_run_only(stack):
    collector, api = stack
    assert json_of(call(api + "refit", "POST", {"run": "api-run", "space": "lora"}))["ok"]
    assert json_of(call(api + "clear", "POST", {"run": "api-run", "space": "prompt"}))["ok"]
    runs = query(collector.query, {"op": "stats"})["runs"]
    assert runs["api-run"]["prompt"]["buffered"] == 0 and runs["api-run"]["latent"]["buffered"] == 12
    assert runs["other-run"]["prompt"]["buffered"] == 12
    assert json_of(call(api + "runs/other-run", "DELETE")) == {"ok": True, "deleted": "other-run"}
    assert "other-run" not in query(collector.query, {"op": "stats"})["runs"]
    assert call(api + "export?format=npz&run=other-run")[0] == 404


def test_a_collector_that_does_not_answer_gives_503(tmp_path):
    with DashboardProcess(f"tcp://127.0.0.1:{free_port()}", log_dir=tmp_path) as dashboard:
        dashboard.wait_ready()
        status, raw, kind = call(dashboard.url + "api/status")
        assert status == 503 and kind == "application/json" and json.loads(raw)["ok"] is False


def test_the_api_lives_under_the_url_prefix_and_behind_the_token(tmp_path):
    with CollectorProcess(tmp_path / "store") as collector:
        collector.wait_ready(projections=False)
        extra = ["--url-prefix", "/viz/", "--token", "s3cret"]
        dashboard = DashboardProcess(collector.query, log_dir=tmp_path, extra_args=extra).start()
        try:  # started by hand: its own readiness check fetches "/" without the token
            root = dashboard.url  # http://127.0.0.1:PORT/
            bearer = {"Authorization": "Bearer s3cret"}
            wait_for(lambda: reachable(root + "viz/api/status", bearer) == 200, timeout=60)
            assert json_of(call(root + "viz/api/status", headers=bearer))["ok"]
            assert call(root + "viz/api/status")[0] == 401
            assert call(root + "api/status", headers=bearer)[0] == 404  # only under the prefix
            assert call(root + "viz/api/clear", "POST", {"run": None, "space": None})[0] == 401
        finally:
            dashboard.stop()


def test_the_adapter_route_returns_the_runs_update_sizes(stack):
    import zmq

    from acestep_viz.wire import AdapterSizes, encode_adapter

    collector, api = stack
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 2000)
    try:
        sock.connect(collector.ingest)
        assert sock.poll(10_000)
        sock.recv()  # the collector's subscription
        for step in (0, 50):
            sock.send_multipart(encode_adapter(AdapterSizes("api-run", step, {"blocks.0.q": step / 1000})))
    finally:
        sock.close()
    wait_for(lambda: query(collector.query, {"op": "adapter", "run": "api-run"})["layers"], timeout=30)
    assert json_of(call(api + "adapter/api-run")) == {
        "ok": True, "run": "api-run", "layers": {"blocks.0.q": {"step": [0, 50], "value": [0.0, 0.05]}}}
    status, raw, _ = call(api + "adapter/no-such-run")
    assert status == 404 and b"no run named" in raw
