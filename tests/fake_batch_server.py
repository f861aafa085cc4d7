"""A fake OpenAI Batch API (files + batches) on 127.0.0.1, for tests; and, run as a script, a
fake vLLM `run_batch` (`-i requests.jsonl -o output.jsonl --model M`).

The server answers every line with `codeocean_answer(body)` (the same answers FakeOpenAI
gives), so a batch run and an interactive run see the same data. A batch goes validating ->
in_progress -> its end over a few polls. Faults, per batch: keyed by its
index in creation order (0, 1, ...) or by (role, n), the n-th batch of generator (or judge)
lines, which stays deterministic while one role's resubmissions overlap the other's batches:
  expire      the batch ends `expired`: the first half of its lines answered, the rest in the
              error file with code `batch_expired`
  partial     every third line (0, 3, ...) comes back with status 500 in the error file
  fail_batch  the batch ends `failed` (validation): no output, nothing answered
  cancel      the batch ends `cancelled` with the first half answered
`poison`: a line whose prompt holds this text gets a status 500 every time. `hold_from`:
batches from that index on stay in_progress until `release()`.
It counts what a real one would charge: how often each custom_id was answered, and how many
batches were created."""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:
    from .fake_openai_server import LocalServer, _role, body_key, codeocean_answer
except ImportError:  # run as a script (the fake vLLM runner)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fake_openai_server import LocalServer, _role, body_key, codeocean_answer

TERMINAL = ("completed", "failed", "expired", "cancelled")


def completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    """A chat completion as FakeOpenAI sends it (same usage arithmetic)."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "fake") + "-2024-01-01",  # dated, as the real API answers
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


def ok_line(n: int, request: dict[str, Any], answer=codeocean_answer) -> dict[str, Any]:
    body = request["body"]
    return {
        "id": f"batch_req_{n}",
        "custom_id": request["custom_id"],
        "response": {
            "status_code": 200,
            "request_id": f"req_{n}",
            "body": completion(body, answer(body)),
        },
        "error": None,
    }


def error_line(n: int, request: dict[str, Any], status: int | None, code: str | None) -> dict:
    if status is not None:
        response = {
            "status_code": status,
            "request_id": f"req_{n}",
            "body": {"error": {"message": "boom", "type": "server_error"}},
        }
        return {"id": f"batch_req_{n}", "custom_id": request["custom_id"], "response": response}
    return {
        "id": f"batch_req_{n}",
        "custom_id": request["custom_id"],
        "response": None,
        "error": {"code": code, "message": "This request could not be executed in time."},
    }


def _multipart(content_type: str, data: bytes) -> dict[str, tuple[str | None, bytes]]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_filename(), part.get_payload(decode=True))
    return fields


class FakeBatchServer(LocalServer):
    def __init__(
        self,
        faults: dict[int | tuple[str, int], str] | None = None,
        poison: str | None = None,
        polls_to_finish: int = 2,
        hold_from: int | None = None,
        answer=codeocean_answer,
    ) -> None:
        self.faults = dict(faults or {})
        self.poison = poison
        self.polls_to_finish = polls_to_finish
        self.hold_from = hold_from
        self.answer = answer
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # batch ids in creation order
        self.answered: Counter = Counter()  # custom_id -> times answered (charged)
        self.submitted: Counter = Counter()  # custom_id -> times sent in a batch
        self.bodies: set[str] = set()  # body_key of every line body received
        self.polls: Counter = Counter()  # batch id -> retrievals
        self.by_role: Counter = Counter()  # role -> batches created
        self.server: ThreadingHTTPServer | None = None

    # -- bookkeeping

    @property
    def created(self) -> int:
        return len(self.order)

    def release(self) -> None:
        self.released.set()

    def status_of(self, index: int) -> str:
        with self.lock:
            return self.batches[self.order[index]]["status"]

    def _new_file(self, data: bytes, purpose: str, filename: str = "") -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename or f"{file_id}.jsonl",
            "purpose": purpose,
            "status": "processed",
        }

    def _create(self, params: dict[str, Any]) -> dict[str, Any]:
        requests = [json.loads(x) for x in self.files[params["input_file_id"]].splitlines() if x]
        batch_id = f"batch_{len(self.order) + 1}"
        for request in requests:
            self.submitted[request["custom_id"]] += 1
            self.bodies.add(body_key(request["body"]))
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": params["endpoint"],
            "errors": None,
            "input_file_id": params["input_file_id"],
            "completion_window": params["completion_window"],
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "metadata": params.get("metadata"),
            "request_counts": {"total": len(requests), "completed": 0, "failed": 0},
            "_index": len(self.order),
            "_requests": requests,
        }
        role = _role(requests[0]["body"]) if requests else "generator"
        batch["_role"] = (role, self.by_role[role])
        self.by_role[role] += 1
        self.batches[batch_id] = batch
        self.order.append(batch_id)
        return batch

    def _advance(self, batch: dict[str, Any]) -> None:
        if batch["status"] in TERMINAL:
            return
        self.polls[batch["id"]] += 1
        if batch["status"] == "validating":
            batch["status"] = "in_progress"
            batch["in_progress_at"] = int(time.time())
            return
        held = self.hold_from is not None and batch["_index"] >= self.hold_from
        if self.polls[batch["id"]] < self.polls_to_finish or (held and not self.released.is_set()):
            return
        fault = self.faults.get(batch["_index"]) or self.faults.get(batch["_role"], "")
        self._finish(batch, fault)

    def _finish(self, batch: dict[str, Any], fault: str) -> None:
        requests = batch["_requests"]
        if fault == "fail_batch":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid", "message": "x"}]}
            return
        half = (len(requests) + 1) // 2
        out, err = [], []
        for n, request in enumerate(requests):
            text = json.dumps(request["body"]["messages"])
            if fault in ("expire", "cancel") and n >= half:
                if fault == "expire":
                    err.append(error_line(n, request, None, "batch_expired"))
                continue
            if (self.poison and self.poison in text) or (fault == "partial" and n % 3 == 0):
                err.append(error_line(n, request, 500, None))
                continue
            out.append(ok_line(n, request, self.answer))
            self.answered[request["custom_id"]] += 1
        dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
        if out:
            batch["output_file_id"] = self._new_file(dump(out), "batch_output")["id"]
        if err:
            batch["error_file_id"] = self._new_file(dump(err), "batch_output")["id"]
        batch["status"] = {"expire": "expired", "cancel": "cancelled"}.get(fault, "completed")
        batch["request_counts"] = {
            "total": len(requests),
            "completed": len(out),
            "failed": len(requests) - len(out),
        }
        batch[f"{batch['status']}_at"] = int(time.time())

    @staticmethod
    def public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    # -- server

    def start(self) -> FakeBatchServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _json(self, data: dict[str, Any], status: int = 200) -> None:
                self._send(status, json.dumps(data).encode())

            def do_GET(self) -> None:
                match = re.fullmatch(r"/v1/files/([\w-]+)/content", self.path)
                with fake.lock:
                    if match and match.group(1) in fake.files:
                        data = fake.files[match.group(1)]
                        self._send(200, data, "application/octet-stream")
                        return
                    if self.path.split("?")[0] == "/v1/batches":  # newest first, as the API
                        listed = [fake.public(fake.batches[b]) for b in reversed(fake.order)]
                        self._json({"object": "list", "data": listed, "has_more": False})
                        return
                    match = re.fullmatch(r"/v1/batches/([\w-]+)", self.path)
                    if match and match.group(1) in fake.batches:
                        batch = fake.batches[match.group(1)]
                        fake._advance(batch)
                        self._json(fake.public(batch))
                        return
                self._json({"error": {"message": "not found"}}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                with fake.lock:
                    if self.path == "/v1/files":
                        fields = _multipart(self.headers["Content-Type"], data)
                        filename, content = fields["file"]
                        purpose = fields["purpose"][1].decode()
                        self._json(fake._new_file(content, purpose, filename or ""))
                        return
                    if self.path == "/v1/batches":
                        params = json.loads(data or b"{}")
                        if params.get("input_file_id") not in fake.files:
                            self._json({"error": {"message": "no such file"}}, 400)
                            return
                        self._json(fake.public(fake._create(params)))
                        return
                    match = re.fullmatch(r"/v1/batches/([\w-]+)/cancel", self.path)
                    if match and match.group(1) in fake.batches:
                        batch = fake.batches[match.group(1)]
                        if batch["status"] not in TERMINAL:
                            batch["status"] = "cancelled"
                        self._json(fake.public(batch))
                        return
                self._json({"error": {"message": "not found"}}, 404)

        return self.serve(Handler)


def fake_vllm(argv: list[str]) -> int:
    """`-i requests.jsonl -o output.jsonl --model M`, as vLLM's run_batch. With
    FAKE_VLLM_COUNTER set, appends one line per run there; with FAKE_VLLM_KILL_PARENT_AT=n, the
    n-th run kills its parent with SIGKILL once its output is written."""
    args = dict(zip(argv[::2], argv[1::2]))
    requests = [json.loads(x) for x in open(args["-i"], encoding="utf-8") if x.strip()]
    rows = [ok_line(n, r) for n, r in enumerate(requests)]
    for row in rows:
        row["response"]["body"]["model"] = args["--model"]
    with open(args["-o"], "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    counter = os.environ.get("FAKE_VLLM_COUNTER")
    if counter:
        with open(counter, "a", encoding="utf-8") as handle:
            handle.write(f"{args['-i']}\n")
        runs = len(open(counter, encoding="utf-8").read().splitlines())
        if str(runs) == os.environ.get("FAKE_VLLM_KILL_PARENT_AT"):
            os.kill(os.getppid(), signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(fake_vllm(sys.argv[1:]))
