"""A real HTTP server on loopback that plays back scripted answers.

Backends are tested through their real HTTP clients against this server, so the wire format
(status codes, JSON bodies, NDJSON streams) is the one Ollama and OpenAI document.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str -> raw text
    stream: list[Any] | None = None  # NDJSON lines, sent one by one
    content_type: str = "application/json"


@dataclass
class FakeServer:
    url: str
    script: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    default: dict[str, Answer] = field(default_factory=dict)

    def add(self, path: str, *answers: Answer) -> None:
        self.script[path].extend(answers)

    def always(self, path: str, answer: Answer) -> None:
        self.default[path] = answer

    def bodies(self, path: str) -> list[Any]:
        return [body for _, p, body in self.requests if p == path]


@contextmanager
def fake_server() -> Iterator[FakeServer]:
    state = FakeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            path = self.path.split("?")[0]
            state.requests.append((self.command, path, body))
            queue = state.script.get(path)
            answer = queue.popleft() if queue else state.default.get(path)
            if answer is None:
                answer = Answer(status=404, body={"error": f"no scripted answer for {path}"})
            if answer.stream is not None:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for item in answer.stream:
                    chunk = (json.dumps(item) + "\n").encode()
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                return
            payload = answer.body.encode() if isinstance(answer.body, str) else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A loopback port with nothing listening on it (for connection-refused tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
