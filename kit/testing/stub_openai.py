"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1, for the judge's tests and benchmark.

    with StubJudgeServer(grade_for=lambda prompt: 4, latency_s=0.1) as server:
        ... JudgeSettings(judge_backend="openai", base_url=server.url, judge_model="stub") ...
        server.requests        # every request body received, with its Authorization header

`faults` maps a substring of the prompt to the failures to answer with, in order, before the
real reply: "429" (with Retry-After), any other status code ("500", "401"...), "malformed"
(200 with no choices), "notjson" (200 with an HTML body), "timeout" (answers after `timeout_s`)
or "trickle" (a byte every 0.3 s: never idle long enough for a per-read timeout). It serves only
the loopback address and stops on exit.
"""
from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubJudgeServer:
    def __init__(self, grade_for, faults: dict | None = None, latency_s: float = 0.0,
                 timeout_s: float = 2.0, retry_after: str = "0.05", logprobs: bool = True):
        self.grade_for, self.latency_s, self.timeout_s = grade_for, latency_s, timeout_s
        self.faults = {key: list(value) for key, value in (faults or {}).items()}
        self.retry_after, self.logprobs = retry_after, logprobs
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def __enter__(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with stub.lock:
                    stub.requests.append({"path": self.path, "body": body,
                                          "authorization": self.headers.get("Authorization")})
                    fault = next((queue.pop(0) for key, queue in stub.faults.items()
                                  if key in prompt and queue), None)
                time.sleep(stub.latency_s)
                if fault == "429":
                    return self.reply(429, {"error": {"message": "rate limited"}},
                                      {"Retry-After": stub.retry_after})
                if fault and fault.isdigit():  # "500", "400", "401", ...
                    return self.reply(int(fault), {"error": {"message": f"scripted {fault}"}})
                if fault == "timeout":
                    time.sleep(stub.timeout_s)
                if fault == "malformed":
                    return self.reply(200, {"id": "x", "object": "chat.completion", "choices": []})
                if fault == "notjson":
                    return self.reply(200, None, raw=b"<html>502 Bad Gateway</html>")
                if fault == "trickle":
                    return self.reply(200, stub.completion(body, stub.grade_for(prompt)), trickle=True)
                self.reply(200, stub.completion(body, stub.grade_for(prompt)))

            def reply(self, status, payload, headers=None, raw=None, trickle=False):
                data = raw if raw is not None else json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    for start in range(0, len(data), 1 if trickle else len(data)):
                        self.wfile.write(data[start:start + (1 if trickle else len(data))])
                        self.wfile.flush()
                        if trickle:
                            time.sleep(0.3)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def completion(self, body: dict, grade: int) -> dict:
        choice = {"index": 0, "finish_reason": "stop",
                  "message": {"role": "assistant", "content": str(grade)}}
        if body.get("logprobs") and self.logprobs:
            # 70% on the grade, the rest on its neighbours: the expected value stays near it
            weights = {g: (0.7 if g == grade else 0.3 / 2 if abs(g - grade) == 1 else 0.0)
                       for g in range(1, 6)}
            total = sum(weights.values())
            top = [{"token": str(g), "logprob": math.log(w / total), "bytes": None}
                   for g, w in sorted(weights.items(), key=lambda item: -item[1]) if w > 0]
            choice["logprobs"] = {"content": [{"token": str(grade), "logprob": top[0]["logprob"],
                                               "bytes": None, "top_logprobs": top}]}
        return {"id": "stub", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
