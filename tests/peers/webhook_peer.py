"""A webhook receiver on loopback: records every POST, and answers with scripted statuses first
(500, 429 ...) to exercise retries."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []  # every accepted payload
        self.attempts = 0  # every POST, refused ones included
        self.paths: list[str] = []
        # answers before 204: a status, or (status, headers) such as (429, {"Retry-After": "7"})
        self.script: list[int | tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.attempts += 1
                    receiver.paths.append(self.path)
                    answer = receiver.script.pop(0) if receiver.script else 204
                    status, headers = answer if isinstance(answer, tuple) else (answer, {})
                    if status < 300:
                        receiver.received.append(json.loads(body))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The URL carries a secret in its path, as Slack's and Teams' do."""
        return f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000/s3cr3t-hook-token"

    def alerts(self) -> list[dict[str, Any]]:
        return [a for payload in self.received for a in payload["alerts"]]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self.paths.clear()
            self.attempts = 0
            self.script.clear()

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
