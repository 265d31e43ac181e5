"""A fake Ollama on loopback for load, outage and crash tests: the documented /api/chat shape,
answers that fit whatever JSON schema the request's `format` asks for, latency, and outages
(the port really stops listening, so clients see connection refused as they would).

Not a language model: the answers are the first enum value, words of the prompt, small numbers.
Its job is to let many tickets, processes and failures run through shoal's real HTTP client,
store and graph in seconds.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def instance(schema: dict[str, Any], defs: dict[str, Any], words: list[str], depth: int = 0) -> Any:
    """A small value that validates against `schema`."""
    if "$ref" in schema:
        return instance(defs[schema["$ref"].split("/")[-1]], defs, words, depth)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return instance(options[0], defs, words, depth)
    kind = schema.get("type", "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: instance(sub, defs, words, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [instance(schema.get("items", {}), defs, words, depth + 1)] if depth < 3 else []
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    limit = int(schema.get("maxLength", 60))
    text = " ".join(words[:8]) or "thank you for your message"
    return text[:limit]


class FakeOllama:
    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.chats = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        # while down, connections a client kept alive from before are cut too: a real server
        # that dies takes its open connections with it
        self.down = False

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/api/tags"):
                    self._send({"models": [{"name": "fake", "model": "fake", "size": 1, "details": {}}]})
                else:
                    self._send({"version": "0.12.0"})

            def do_POST(self) -> None:
                if fake.down:
                    self._hang_up()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                with fake._lock:
                    fake.chats += 1
                prompt = " ".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")
                words = re.findall(r"[A-Za-z]+", prompt)
                schema = body.get("format")
                if isinstance(schema, dict):
                    content = json.dumps(instance(schema, schema.get("$defs", {}), words))
                else:
                    content = " ".join(words[:12]) or "ok"
                self._send(
                    {
                        "model": body.get("model", "fake"),
                        "created_at": "2026-11-27T10:00:00Z",
                        "message": {"role": "assistant", "content": content},
                        "done": True,
                        "done_reason": "stop",
                        "prompt_eval_count": max(1, len(prompt) // 4),
                        "eval_count": max(1, len(content) // 4),
                    }
                )

            def _hang_up(self) -> None:
                self.close_connection = True
                with suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _send(self, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.down = False
        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        """Stop listening: new connections are refused, open ones cut, until `start()`."""
        self.down = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def outage(self, seconds: float) -> threading.Thread:
        """Go down now and come back after `seconds`, in the background."""
        self.stop()

        def back() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=back, daemon=True)
        thread.start()
        return thread


@contextmanager
def fake_ollama(*, latency_s: float = 0.0) -> Iterator[FakeOllama]:
    fake = FakeOllama(latency_s=latency_s)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
