"""A real OpenAI-compatible chat server for tests: scripted replies, fault injection, call accounting.

In process: ``with FakeOpenAI(script) as srv: ... srv.url ... srv.stats()``. Standalone (for SIGKILL tests):
``python tests/openai_server.py --port 0 --script script.json`` prints ``READY <port>``; ``GET /stats`` returns
the counters as JSON.

Script (a dict, or a JSON file)::

    {"replies": {"<last user message>": "<reply>"},   # others get "reply: <last user message>"
     "delay": 0.0,                                    # seconds before every reply
     "models": ["m"],                                 # optional: other models get 404 model_not_found
     "reflector": true,                               # answer selectune's reflection prompts (see reflector())
     "faults": [{"kind": "429", "match": "text", "calls": [1, 2], "retry_after": 1, "delay": 2.0}]}

Fault kinds: 429 (with Retry-After), 500, slow (sleeps ``delay``), malformed (broken JSON body), no_choices,
plain (plain text instead of the scripted reply), no_usage. A fault fires when ``match`` (default: any) is a
substring of the last user message and that message's call number (1-based) is in ``calls`` (default: every
call). Usage: prompt tokens = words in all messages, completion tokens = words in the reply.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PLAIN = "plain text without any markers"


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip() if start in text else ""


def reflector(prompt: str) -> str:
    """A deterministic stand-in teacher for selectune's reflection prompts: the instruction reflection makes the
    instruction self-contained (input folded in) and asks for reasoning, keeping the answer; the response
    reflection appends a one-line summary of the answer. Every third instruction (by length) gets a critique
    without markers, as weak teachers write. Other prompts: ``reply: <prompt>``."""
    if "[Instruction]\n" not in prompt:
        return f"reply: {prompt}"
    instruction = _between(prompt, "[Instruction]\n", "\n\n[")
    context = _between(prompt, "[Input]\n", "\n\n[Answer]")
    answer = _between(prompt, "[Answer]\n", "\n[End of Answer]")
    if "[New Instruction] <the new instruction>" in prompt:
        if len(instruction) % 3 == 0:
            return "The instruction is clear and the answer is adequate; no change is needed."
        new = f"{instruction}{f' Use this input: {context}' if context else ''} Explain your reasoning step by step."
        return f"The instruction could demand more.\n[New Instruction] {new} [End]\n[New Answer] {answer} [End]"
    first = answer.split(". ", 1)[0].rstrip(".")
    return f"The answer lacks a summary.\n[Better Answer] {answer}\n\nIn short: {first}. [End]"


def _client_gone(sock: socket.socket) -> bool:
    """True when the peer closed the connection (it timed out or its process died)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes | str, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/stats":
            self._send(200, json.dumps(self.server.fake.stats()))
        else:
            self._send(404, json.dumps({"error": {"message": "not found"}}))

    def do_POST(self) -> None:
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
            return
        users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
        prompt = users[-1] if users else ""
        with fake.lock:
            fake.total += 1
            fake.received[prompt] += 1
            n = fake.received[prompt]
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            fake.headers.append(dict(self.headers))
            fake.bodies.append(body)
        try:
            self._respond(fake, body, prompt, n)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _respond(self, fake: FakeOpenAI, body: dict, prompt: str, n: int) -> None:
        if fake.models and body.get("model") not in fake.models:
            err = {"message": f"model {body.get('model')!r} not found", "type": "invalid_request_error",
                   "code": "model_not_found"}
            self._send(404, json.dumps({"error": err}))
            return
        fault = next((f for f in fake.faults if f.get("match", "") in prompt
                      and (f.get("calls") is None or n in f["calls"])), {})
        kind = fault.get("kind")
        delay = float(fault.get("delay", 1.0)) if kind == "slow" else fake.delay
        if delay:
            time.sleep(delay)
            if _client_gone(self.connection):
                with fake.lock:
                    fake.abandoned[prompt] += 1
                self.close_connection = True
                return
        if kind == "429":
            err = {"error": {"message": "rate limited", "type": "rate_limit_error"}}
            self._send(429, json.dumps(err), {"Retry-After": str(fault.get("retry_after", 1))})
            return
        if kind == "500":
            self._send(500, json.dumps({"error": {"message": "internal error", "type": "server_error"}}))
            return
        if kind == "malformed":
            self._send(200, '{"id": "chatcmpl-x", "choices": [{"message": ')
            return
        reply = PLAIN if kind == "plain" else fake.reply(prompt)
        out: dict[str, Any] = {"id": f"chatcmpl-{fake.total}", "object": "chat.completion",
                               "created": int(time.time()), "model": body.get("model", "")}
        if kind != "no_choices":
            out["choices"] = [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": reply}}]
        if kind != "no_usage":
            p = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            c = len(reply.split())
            out["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        self._send(200, json.dumps(out))
        if kind != "no_choices":
            with fake.lock:
                fake.served[prompt] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI


class FakeOpenAI:
    """The server and its counters; ``reply`` overrides the scripted table (last user message -> text)."""

    def __init__(self, script: dict | None = None, reply: Callable[[str], str] | None = None,
                 port: int = 0) -> None:
        script = script or {}
        self.replies: dict[str, str] = script.get("replies", {})
        self.delay = float(script.get("delay", 0.0))
        self.faults: list[dict] = script.get("faults", [])
        self.models: list[str] | None = script.get("models")
        self._reply = reply or (reflector if script.get("reflector") else None)
        self.lock = threading.Lock()
        self.total = 0
        self.received: Counter[str] = Counter()  # requests per prompt, every attempt
        self.served: Counter[str] = Counter()  # successful replies per prompt
        self.abandoned: Counter[str] = Counter()  # the client left before the (slow) reply
        self.in_flight = 0
        self.max_in_flight = 0
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict] = []
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def reply(self, prompt: str) -> str:
        if self._reply is not None:
            return self._reply(prompt)
        return self.replies.get(prompt, f"reply: {prompt}")

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"total": self.total, "received": dict(self.received), "served": dict(self.served),
                    "abandoned": dict(self.abandoned), "max_in_flight": self.max_in_flight}

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no request is being handled (slow replies to clients that left included)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 = a free port (printed as READY <port>)")
    parser.add_argument("--script", type=Path, default=None, help="JSON script (see the module docstring)")
    args = parser.parse_args()
    script = json.loads(args.script.read_text()) if args.script else {}
    fake = FakeOpenAI(script, port=args.port)
    print(f"READY {fake.port}", flush=True)
    fake._httpd.serve_forever()


if __name__ == "__main__":
    main()
