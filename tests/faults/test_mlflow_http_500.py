"""The MLflow tracking server answering HTTP 500 for a while in the middle of a run.

A real ``mlflow server`` on 127.0.0.1 (the session's) sits behind a small proxy that this test runs in a thread. For a while the
proxy answers 500 to every request: every other one without passing it on, and the others only after the
server has done it (a gateway that times out on a write that went through), so the tracker is told that writes
failed which MLflow in fact holds. Training never stops; the tracker falls behind, a catch-up attempt during
the outage fails too, and once the server answers again the tracker catches up from the journal: the server's
history is the reference run's, every value once, none twice.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import emergence.recorder
from emergence.rundir import run_directory
from emergence.spec import resolve
from tests.faults.harness import (
    assert_mlflow_caught_up,
    fault_spec,
    mlflow_tracking,
    record_fault,
    run_here,
    write_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAIL_FROM_STEP = 5  # the outage begins once the measurement at step 5 is logged
REFUSALS = 6  # ... and lasts this many 500s: one failed write (MLflow's client tries 3 times) and one failed catch-up
RETRY_SECONDS = 1.0  # how often the run tries to catch its tracker up (30 s in the product: the test cannot wait)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


class FlakyProxy:
    """An HTTP proxy in front of ``upstream_port``. While ``failing`` it answers 500 to every request, the odd ones
    without passing them on, the even ones after the server has done them; ``refused`` counts the 500s."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.failing = threading.Event()
        self.refused = 0
        self.done_then_refused = 0
        self._lock = threading.Lock()
        proxy = self

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as MLflow's client expects of a server

            def do_GET(self) -> None:
                proxy.relay(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="flaky-proxy", daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _fault(self) -> str | None:
        with self._lock:
            if not self.failing.is_set():
                return None
            self.refused += 1
            if self.refused >= REFUSALS:
                self.failing.clear()  # this one is the last 500
            return "refuse" if self.refused % 2 else "after"

    def relay(self, handler: BaseHTTPRequestHandler) -> None:
        body = read_body(handler)
        fault = self._fault()
        if fault != "refuse":
            upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
            try:
                headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(handler.command, handler.path, body=body, headers=headers)
                response = upstream.getresponse()
                status, reply, reply_headers = response.status, response.read(), response.getheaders()
            finally:
                upstream.close()
        if fault is not None:
            if fault == "after":
                self.done_then_refused += 1
            status, reply = 500, json.dumps({"error_code": "INTERNAL_ERROR", "message": "injected by the test"}).encode()
            reply_headers = [("Content-Type", "application/json")]
        handler.send_response(status)
        for key, value in reply_headers:
            if key.lower() not in HOP_BY_HOP:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(reply)


def read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        body = b""
        while (size := int(handler.rfile.readline().split(b";")[0].strip(), 16)) > 0:
            body += handler.rfile.read(size)
            handler.rfile.readline()
        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return body
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else None


EXPERIMENT = "http500"  # the session's server is shared by the cases; each keeps to an experiment of its own


def test_mlflow_server_answering_500_for_a_while_is_caught_up_without_duplicates(tmp_path, reference, mlflow_server, monkeypatch):
    with FlakyProxy(mlflow_server.port) as proxy:
        spec_path = write_spec(tmp_path / "spec.yaml", fault_spec(tmp_path / "runs", mlflow_tracking(proxy.uri, EXPERIMENT)))
        (run_spec,) = resolve(str(spec_path), [])
        run_dir = run_directory(run_spec)
        failing_at: list[int] = []

        def outage(result, values):
            if result.step == FAIL_FROM_STEP and values:
                proxy.failing.set()
            if proxy.failing.is_set():
                failing_at.append(result.step)

        monkeypatch.setattr(emergence.recorder, "TRACKER_RETRY_SECONDS", RETRY_SECONDS)
        outcome = run_here(run_spec, outage)
        assert outcome.state == "completed", outcome.reason
        assert proxy.refused == REFUSALS and proxy.done_then_refused == REFUSALS // 2
    assert failing_at and failing_at[-1] < 40, "the outage must be over before the run's end"

    lost, duplicated = assert_mlflow_caught_up(run_dir, reference, mlflow_server.uri, EXPERIMENT)
    record_fault("MLflow server answering HTTP 500 (half of them after doing the write) for a while mid-run", 1, 1, lost, duplicated, None)
