"""acestep_viz.dashboard.client and the poll glue against a tiny in-test REP server on a loopback port."""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import pytest
import zmq
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.callbacks import clear_outputs, delete_run_outputs, poll_outputs
from acestep_viz.dashboard.client import CollectorClient, CollectorRequestError, CollectorUnavailable
from acestep_viz.dashboard.figures import SPACES
from acestep_viz.dashboard.status import CLEARED, ERROR, LIVE, OFFLINE
from dash import no_update
from dash.exceptions import PreventUpdate

from tests.support import free_port


@contextmanager
def rep_server(handler):
    """A REP socket on a free 127.0.0.1 port answering ``handler(request_bytes) -> reply_bytes``."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    stop = threading.Event()
    ready = threading.Event()
    seen: list = []

    def serve():
        sock = zmq.Context.instance().socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        ready.set()
        try:
            while not stop.is_set():
                if sock.poll(50):
                    raw = sock.recv()
                    seen.append(json.loads(raw))
                    reply = handler(raw)
                    if reply is not None:
                        sock.send(reply)
                    else:  # a hung collector: never answers again
                        stop.wait()
        finally:
            sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield endpoint, seen
    finally:
        stop.set()
        thread.join(5)


def json_handler(fn):
    return lambda raw: json.dumps(fn(json.loads(raw))).encode()


def snapshot_reply(request, version=3, run="run-a", n=12):
    counts = {s: {"buffered": n, "projected": n} for s in ("latent", "lora", "prompt")}
    if request.get("since") == version:
        return {"ok": True, "changed": False, "version": version, "run": run, "warming_up": False,
                "paused": False, "counts": counts}
    pts = {"x": [float(i) for i in range(n)], "y": [float(-i) for i in range(n)],
           "id": [f"c{i}" for i in range(n)], "step": list(range(n)), "loss": None, "timestep": None,
           "layer": None, "prompt": None}
    spaces = {s: {**counts[s], "projected_at": 1.0, "last_step": n, "points": pts} for s in counts}
    return {"ok": True, "changed": True, "version": version, "run": run, "warming_up": False, "paused": False,
            "counts": counts, "spaces": spaces}


def test_round_trip_of_every_op():
    def handle(request):
        if request["op"] == "snapshot":
            return snapshot_reply(request)
        if request["op"] == "runs":
            return {"ok": True, "runs": [{"run": "run-a", "first_seen": 1.0, "last_seen": 2.0, "last_step": 5}]}
        return {"ok": True, "echo": request}

    with rep_server(json_handler(handle)) as (endpoint, seen):
        client = CollectorClient(endpoint)
        assert client.stats()["echo"] == {"op": "stats"}
        assert client.runs()[0]["run"] == "run-a"
        assert client.snapshot("run-a", 2)["changed"] is True
        assert client.snapshot(None, 3)["changed"] is False
        assert client.clear()["echo"] == {"op": "clear", "run": None, "space": None}
        assert client.clear("run-a", "lora")["echo"] == {"op": "clear", "run": "run-a", "space": "lora"}
        assert client.pause()["ok"] and client.resume()["ok"]
        assert client.refit("run-a")["echo"] == {"op": "refit", "run": "run-a", "space": None}
    assert seen[2] == {"op": "snapshot", "run": "run-a", "since": 2, "encoding": "typed"}


def test_timeout_raises_collector_unavailable_quickly():
    with rep_server(lambda raw: None) as (endpoint, _):
        client = CollectorClient(endpoint, timeout_ms=300)
        started = time.monotonic()
        with pytest.raises(CollectorUnavailable, match="no reply"):
            client.stats()
        assert time.monotonic() - started < 2.0


def test_nobody_listening_raises_collector_unavailable():
    client = CollectorClient(f"tcp://127.0.0.1:{free_port()}", timeout_ms=200)
    started = time.monotonic()
    with pytest.raises(CollectorUnavailable):
        client.snapshot()
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("reply", [b"not json", b"[1, 2]", b'{"no_ok": 1}', b"\xff\xfe"])
def test_bad_replies_raise_collector_unavailable(reply):
    with rep_server(lambda raw: reply) as (endpoint, _):
        with pytest.raises(CollectorUnavailable):
            CollectorClient(endpoint).stats()


def test_refusal_raises_request_error_with_the_collectors_message():
    with rep_server(json_handler(lambda r: {"ok": False, "error": "unknown op 'x'"})) as (endpoint, _):
        with pytest.raises(CollectorRequestError, match="unknown op 'x'"):
            CollectorClient(endpoint).request({"op": "x"})


def test_client_is_usable_from_many_threads():
    with rep_server(json_handler(lambda r: {"ok": True, "n": r["n"]})) as (endpoint, _):
        client = CollectorClient(endpoint)
        results = {}

        def ask(n):
            results[n] = client.request({"op": "stats", "n": n})["n"]

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == {n: n for n in range(8)}


# -- the poll glue ---------------------------------------------------------------------------------
def collector_reply(request, version=3, run="run-a", n=12):
    """A fake collector answering what a poll asks: snapshot, the frame history and the run list."""
    if request["op"] == "history":
        return {"ok": True, "run": run, "space": request["space"],
                "frames": [{"version": 2, "step": 5, "neighbour_overlap": 0.5}, {"version": 3, "step": 9}]}
    if request["op"] == "runs":
        return {"ok": True, "runs": [{"run": run}]}
    return {**snapshot_reply(request, version, run, n), "last_seen": 1000.0, "last_step": 9}


def poll(client, seen=None, current=None, shown=("0 samples",) * 3, staleness=None, **kw):
    return poll_outputs(client, ReplyCache(), seen, current, list(shown), staleness, **kw)


def test_poll_keeps_the_points_on_the_server_and_sends_nothing_when_unchanged():
    cache = ReplyCache()
    with rep_server(json_handler(collector_reply)) as (endpoint, _):
        client = CollectorClient(endpoint)
        out = poll_outputs(client, cache, None, None, ["0 samples"] * 3)
        assert out.seen == {"run": "run-a", "version": 3, "refresh": 0}
        assert [len(cache.get(("snapshot", "run-a", 3))["spaces"][s]["points"]["x"]) for s in SPACES] == [12] * 3
        assert [out.latent, out.lora, out.prompt] == ["12 samples (projected)"] * 3
        assert out.status["state"] == LIVE
        assert out.staleness == {"step": 9, "last_seen": 1000.0}
        assert out.history["steps"] == [5, 9] and out.history["frames"]["lora"] == [[2, 5], [3, 9]]
        assert [o["value"] for o in out.runs] == ["", "run-a"]
        with pytest.raises(PreventUpdate):  # same version, same counts: nothing at all is sent
            poll_outputs(client, cache, out.seen, out.status, [out.latent, out.lora, out.prompt], out.staleness)
        forced = poll_outputs(client, cache, out.seen, out.status, [out.latent, out.lora, out.prompt],
                              out.staleness, forced=True)  # Refresh Now redraws
        assert forced.seen["refresh"] == 1 and forced.latent is no_update


def test_poll_follows_a_new_run_with_a_full_snapshot():
    with rep_server(json_handler(lambda r: collector_reply(r, run="run-b"))) as (endpoint, seen_requests):
        out = poll(CollectorClient(endpoint), {"run": "run-a", "version": 3})
    assert out.seen["run"] == "run-b" and out.history is not no_update
    assert {"op": "snapshot", "run": "run-b", "since": None, "encoding": "typed"} in seen_requests


def test_choosing_a_run_asks_for_that_run_from_scratch():
    with rep_server(json_handler(lambda r: collector_reply(r, run=r.get("run") or "run-b"))) as (endpoint, asked):
        out = poll(CollectorClient(endpoint), {"run": "run-b", "version": 3}, run="run-a")
    assert asked[0] == {"op": "snapshot", "run": "run-a", "since": None, "encoding": "typed"}
    assert out.seen["run"] == "run-a"


def test_poll_with_the_collector_offline_changes_only_the_status():
    client = CollectorClient(f"tcp://127.0.0.1:{free_port()}", timeout_ms=200)
    out = poll(client, {"run": "r", "version": 1}, shown=[""] * 3)
    assert out.status["state"] == OFFLINE
    assert all(value is no_update for name, value in out._asdict().items() if name != "status")
    with pytest.raises(PreventUpdate):  # still offline: nothing new to say
        poll(client, {"run": "r", "version": 1}, out.status, [""] * 3)


def test_poll_reports_a_refusal_as_an_error():
    with rep_server(json_handler(lambda r: {"ok": False, "error": "boom"})) as (endpoint, _):
        out = poll(CollectorClient(endpoint), shown=[""] * 3)
    assert out.status["state"] == ERROR and "boom" in out.status["detail"]


def test_clear_asks_the_collector_and_resets_the_page():
    cache = ReplyCache()
    cache.put(("snapshot", "run-a", 3), {"old": True})
    with rep_server(json_handler(lambda r: {"ok": True})) as (endpoint, seen_requests):
        out = clear_outputs(CollectorClient(endpoint), cache)
    assert seen_requests == [{"op": "clear", "run": None, "space": None}]
    assert out.status["state"] == CLEARED and out.seen["version"] is None
    assert [out.latent, out.lora, out.prompt] == ["0 samples"] * 3
    assert out.history["steps"] == [] and cache.get(("snapshot", "run-a", 3)) is None


def test_delete_run_asks_for_the_named_run_and_the_page_follows_the_latest_run_again():
    cache = ReplyCache()
    cache.put(("snapshot", "run-a", 3), {"old": True})
    with rep_server(json_handler(lambda r: {"ok": True, "deleted": r["run"]})) as (endpoint, seen_requests):
        message, run_value, seen = delete_run_outputs(CollectorClient(endpoint), cache, "run-a")
    assert seen_requests == [{"op": "delete", "run": "run-a"}]
    assert "run-a" in message and run_value == "" and seen["version"] is None
    assert cache.get(("snapshot", "run-a", 3)) is None


def test_delete_run_without_a_run_or_refused_changes_nothing():
    assert delete_run_outputs(CollectorClient("tcp://127.0.0.1:9"), ReplyCache(), None)[1:] == (no_update, no_update)
    refusal = json_handler(lambda r: {"ok": False, "error": "no run named 'x'", "reason": "unknown_run"})
    with rep_server(refusal) as (endpoint, _):
        message, run_value, seen = delete_run_outputs(CollectorClient(endpoint), ReplyCache(), "x")
    assert message.startswith("Not deleted") and "no run named 'x'" in message
    assert run_value is no_update and seen is no_update
