"""A small OpenAI-protocol chat server for testing the LLM judge (stdlib only, a thread on 127.0.0.1, port 0).

POST /v1/chat/completions answers like a judge that says "yes" when the label named in the prompt occurs in the
model answer named in the prompt. Faults are queued per test and used up one request each, in order:

    with JudgeServer() as server:
        server.faults += ["500", "500"]          # the next two requests fail with HTTP 500
        server.default = "maybe"                 # then every request answers "maybe"

Faults: "500" (HTTP 500), "429" (HTTP 429 with Retry-After: 0), "sleep" (answers only after ``sleep_s``, past a
short client timeout), "malformed" (a body that is not JSON), "truncated" (JSON cut off mid-way, with a matching
Content-Length), "maybe" (a well-formed reply saying "maybe"), "401" (key refused), "echo_key" (an error body that
repeats the Authorization header). Connection refused: ``server.stop()`` and keep calling.

Other settings: ``models`` (a list: ``GET .../models`` lists them, OpenAI format; None: 404, a server that lists
nothing), ``reply`` (a fixed reply text instead of the yes / no, e.g. "The answer is yes."), ``invert`` (answer the
opposite: a second server that disagrees), ``finish_reason``, ``logprobs_supported`` (a request asking for logprobs
gets the first token's top_logprobs: the decided word likeliest). Any path ending in /chat/completions is served
(Azure's /openai/deployments/NAME/chat/completions?api-version=...); ``paths`` records each POST's path and query,
``headers`` each request's headers (lower-case names), ``bodies`` each POST's JSON body.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_LABEL = re.compile(r"^Correct label: (.*)$", re.MULTILINE)
_ANSWER = re.compile(r"^Model answer: (.*)$", re.MULTILINE)


def label_forms(label_line: str) -> list[str]:
    """"red star (also accepted: crimson star)" -> ["red star", "crimson star"]."""
    m = re.match(r"^(.*) \(also accepted: (.*)\)$", label_line)
    if not m:
        return [label_line]
    return [m.group(1), *[s.strip() for s in m.group(2).split(",")]]


def decide(prompt: str) -> str:
    label = _LABEL.search(prompt)
    answer = _ANSWER.search(prompt)
    if not label or not answer:
        return "I cannot find the label or the answer in this prompt."
    text = answer.group(1).lower()
    return "yes" if any(form.lower() in text for form in label_forms(label.group(1))) else "no"


def first_token_logprobs(word: str, top: int) -> dict[str, Any]:
    """The OpenAI ``logprobs.content[0]`` of a reply starting with ``word``: it is the likeliest token; the other
    of yes / no (capitalised, as chat models spell it) and a few fillers follow."""
    other = {"yes": "No", "no": "Yes"}.get(word, "Yes")
    tops = [{"token": word.capitalize(), "logprob": -0.05}, {"token": "The", "logprob": -3.2},
            {"token": other, "logprob": -3.9}, {"token": " " + word, "logprob": -6.0}][: max(top, 1)]
    return {"token": tops[0]["token"], "logprob": tops[0]["logprob"], "top_logprobs": tops}


class JudgeServer:
    def __init__(self, sleep_s: float = 2.0, port: int = 0):
        self.faults: list[str] = []
        self.default = "correct"
        self.sleep_s = sleep_s
        self.calls = 0  # chat requests received (every attempt, faults included)
        self.authorization: list[str | None] = []
        self.prompts: list[str] = []
        self.models: list[str] | None = None
        self.reply: str | None = None
        self.invert = False
        self.finish_reason = "stop"
        self.logprobs_supported = True
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.model_lists = 0  # GET .../models requests received
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port  # 0: any free port; a given one: a server coming back where a stopped one was

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> JudgeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if not self.path.split("?")[0].endswith("/models") or server.models is None:
                    self._send(404, b'{"error": "not found"}')
                    return
                server.model_lists += 1
                listing = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"}
                                                      for m in server.models]}
                self._send(200, json.dumps(listing).encode())

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.paths.append(self.path)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.bodies.append(body)
                if not self.path.split("?")[0].endswith("/chat/completions"):
                    self._send(404, b'{"error": "not found"}')
                    return
                with server._lock:
                    server.calls += 1
                    server.authorization.append(self.headers.get("Authorization"))
                    mode = server.faults.pop(0) if server.faults else server.default
                prompt = body["messages"][-1]["content"]
                server.prompts.append(prompt)
                if mode == "500":
                    self._send(500, b'{"error": {"message": "internal error"}}')
                elif mode == "429":
                    self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0"})
                elif mode == "401":
                    self._send(401, b'{"error": {"message": "invalid api key"}}')
                elif mode == "echo_key":
                    self._send(500, json.dumps({"error": self.headers.get("Authorization")}).encode())
                elif mode == "malformed":
                    self._send(200, b"<html>Bad gateway</html>")
                elif mode == "truncated":
                    self._send(200, b'{"choices": [{"message": {"role": "assistant", "content": "ye')
                else:
                    if mode == "sleep":
                        server._release.wait(server.sleep_s)
                    word = decide(prompt)
                    if server.invert:
                        word = {"yes": "no", "no": "yes"}.get(word, word)
                    content = "Maybe." if mode == "maybe" else server.reply if server.reply is not None else word
                    choice: dict[str, Any] = {"index": 0, "finish_reason": server.finish_reason,
                                              "message": {"role": "assistant", "content": content}}
                    if body.get("logprobs") and server.logprobs_supported:
                        choice["logprobs"] = {"content": [first_token_logprobs(word, int(body.get("top_logprobs")
                                                                                         or 0))]}
                    # the model name is echoed back, whatever it was: a server that serves one model under any name
                    reply = {"id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                             "choices": [choice],
                             "usage": {"prompt_tokens": 50, "completion_tokens": 1, "total_tokens": 51}}
                    self._send(200, json.dumps(reply).encode())

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: further requests get "connection refused"."""
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
