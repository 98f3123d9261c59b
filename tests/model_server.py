"""A real prediction endpoint on 127.0.0.1 in a thread, for the endpoint tests: it records every
request and answers with what `answer(request_json)` returns (a dict sent as JSON, or a
(status, bytes, headers) triple), optionally after a delay."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Asked:
    headers: dict[str, str]
    body: dict


def confident(item: dict, classes: list[str]) -> dict[str, float]:
    """Sure of the first class (the rest share what is left)."""
    rest = 0.1 / (len(classes) - 1)
    return {c: (0.9 if i == 0 else rest) for i, c in enumerate(classes)}


@dataclass
class ModelServer:
    server: ThreadingHTTPServer
    version: str = "v1"
    #: Scores for one item entry of a request; `confident` unless told otherwise.
    scores: Callable[[dict, list[str]], dict[str, float]] = confident
    #: Replaces the whole answer when set: request JSON -> dict, or (status, bytes, headers).
    answer: Callable[[dict], Any] | None = None
    #: Seconds each of the next answers is held back (popped in order).
    delays: list[float] = field(default_factory=list)
    requests: list[Asked] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/predict"

    def respond(self, asked: dict) -> tuple[int, bytes, dict[str, str]]:
        if self.answer is not None:
            out = self.answer(asked)
            if isinstance(out, tuple):
                return out
        else:
            out = {
                "model_version": self.version,
                "predictions": [
                    {"id": item["id"], "scores": self.scores(item, asked["classes"])}
                    for item in asked["items"]
                ],
            }
        return 200, json.dumps(out).encode(), {"Content-Type": "application/json"}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_model_server(host: str = "127.0.0.1") -> ModelServer:
    model: ModelServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            asked = json.loads(raw)
            with model.lock:
                model.requests.append(Asked(dict(self.headers.items()), asked))
                delay = model.delays.pop(0) if model.delays else 0.0
            if delay:
                threading.Event().wait(delay)
            status, body, headers = model.respond(asked)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (a timeout test)
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    model = ModelServer(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return model
