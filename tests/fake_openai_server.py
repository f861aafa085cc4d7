"""A fake OpenAI-compatible chat server on 127.0.0.1 that injects faults, for tests and bench.

Faults are keyed by markers in the prompt, `FAULT:<role>:<action>:<times>` (role generator or
judge), so they hit the same item whatever the concurrency: the first <times> requests of that
role whose prompt carries the marker get the fault, later ones a normal answer.
Actions: 429 (with Retry-After), 400, nojson (400 when asked for JSON), 500, slow (answer
after `slow_s`), drop (close the connection without a response), malformed (a 200 whose
body is not JSON), nochoices (JSON without choices), noverdict (a judge reply without any
verdict), no (the judge says no).
Normal answers are a deterministic function of the prompt, so two runs see the same data."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MARKER = re.compile(r"FAULT:(generator|judge):(\w+):(\d+)")


def body_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _role(body: dict[str, Any]) -> str:
    system = next((m["content"] for m in body.get("messages", []) if m["role"] == "system"), "")
    return "judge" if "reviewer" in system else "generator"


def _raw_code(prompt: str) -> str:
    match = re.search(r"Now the raw code:\n```\w*\n(.*?)\n```", prompt, re.S)
    return match.group(1) if match else "def f():\n    return 1"


def _task(prompt: str) -> str:
    match = re.search(r"Task type: ([\w ]+)", prompt)
    return match.group(1).strip() if match else "Code Generation"


# a plausible translation per target language (it parses there, as the validators check)
TRANSLATIONS = {
    "go": "func {name}() int {{\n\treturn 1\n}}",
    "java": "static int {name}() {{ return 1; }}",
    "javascript": "function {name}() {{ return 1; }}",
    "python": "def {name}():\n    return 1",
    "c++": "int {name}() {{ return 1; }}",
    "cpp": "int {name}() {{ return 1; }}",
    "rust": "fn {name}() -> i32 {{ 1 }}",
}


def codeocean_answer(body: dict[str, Any]) -> str:
    """A plausible case for a generator prompt, an all-yes verdict for a judge prompt."""
    prompt = body["messages"][-1]["content"]
    if _role(body) == "judge":
        ids = re.findall(r"^\d+\. \[(\w+)\]", prompt, re.M)
        rules = {rid: {"answer": "yes", "reason": "fine"} for rid in ids}
        return json.dumps({"rules": rules, "overall": "yes", "analysis": "Looks right."})
    code = _raw_code(prompt)
    name = re.search(r"def (\w+)", code)
    name = name.group(1) if name else "f"
    task = _task(prompt)
    if task == "Code Summarization":
        case = ["Summarise the function below.", code, f"It implements {name} for its caller."]
    elif task == "Code Repair":
        buggy = code.replace("return", "return None and", 1)
        case = ["Fix the bug in this function.", buggy, code]
    elif task == "Code Translation":
        target = re.search(r"translating it into (\w+)", prompt)
        target = target.group(1) if target else "Go"
        translated = TRANSLATIONS.get(target.lower(), TRANSLATIONS["go"]).format(name=name)
        case = [f"Translate this Python function into {target}.", code, translated]
    else:
        case = [f"Write a function called {name}.", f"Signature: {name}()", code]
    return json.dumps(
        {"task_name": task, "instruction": case[0], "information": case[1], "solution": case[2]}
    )


class LocalServer:
    """Serve a handler class on 127.0.0.1 (a free port) in a thread; a context manager."""

    server: ThreadingHTTPServer | None = None

    def serve(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeOpenAI(LocalServer):
    def __init__(
        self,
        delay_s: float = 0.0,
        slow_s: float = 3.0,
        retry_after: str = "0.2",
        answer=codeocean_answer,
    ) -> None:
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.answer = answer
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # {key, role, action, t}
        self.fault_hits: Counter = Counter()
        self.server: ThreadingHTTPServer | None = None

    # -- bookkeeping

    def _decide(self, body: dict[str, Any]) -> str:
        role = _role(body)
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        action = "ok"
        with self.lock:
            for marker_role, name, times in MARKER.findall(text):
                if marker_role != role:
                    continue
                key = (marker_role, name, body_key(body))  # retries resend the same body
                if self.fault_hits[key] < int(times):
                    self.fault_hits[key] += 1
                    action = name
                    break
            self.requests.append(
                {"key": body_key(body), "role": role, "action": action, "t": time.monotonic()}
            )
        return action

    def count(self, action: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if action is None or r["action"] == action)

    # -- server

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path == "/stats":  # for a server run in another process
                    self._send(200, json.dumps({"requests": fake.count()}).encode())
                    return
                self._send(200, json.dumps({"object": "list", "data": [{"id": "fake"}]}).encode())

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                action = fake._decide(body)
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if action == "429":
                    error = {"error": {"message": "rate limited", "type": "rate_limit"}}
                    self._send(429, json.dumps(error).encode(), {"Retry-After": fake.retry_after})
                    return
                if action == "nojson" and "response_format" in body:
                    self._send(400, b'{"error": {"message": "response_format unsupported"}}')
                    return
                if action == "400":
                    self._send(400, b'{"error": {"message": "bad request"}}')
                    return
                if action == "500":
                    self._send(500, b'{"error": {"message": "boom"}}')
                    return
                if action == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if action == "slow":
                    time.sleep(fake.slow_s)
                if action == "malformed":
                    self._send(200, b"<html>this is not json")
                    return
                if action == "nochoices":
                    self._send(200, b'{"id": "x", "object": "chat.completion"}')
                    return
                content = fake.answer(body)
                if action == "noverdict":
                    content = "I think this case is interesting and well written."
                elif action == "no":
                    content = content.replace('"yes"', '"no"')
                reply = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(json.dumps(body)) // 4,
                        "completion_tokens": len(content) // 4,
                        "total_tokens": 0,
                    },
                }
                try:
                    self._send(200, json.dumps(reply).encode())
                except (BrokenPipeError, ConnectionResetError):  # the client timed out
                    pass

        return self.serve(Handler)


def serve_forever(delay_s: float, port_queue) -> None:
    """Run a fake server in a child process (benchmarks: no GIL shared with the client)."""
    fake = FakeOpenAI(delay_s=delay_s).start()
    port_queue.put(fake.base_url)
    threading.Event().wait()
