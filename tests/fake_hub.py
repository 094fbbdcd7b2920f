"""A fake Hugging Face Hub on 127.0.0.1: just the endpoints huggingface_hub 2.4.0 calls for
`create_repo`, `upload_folder` (with the README check and the LFS "basic" transfer; Xet is
switched off in the client with HF_HUB_DISABLE_XET=1) and `hf_hub_download`.

    POST /api/repos/create                             create_repo
    POST /api/validate-yaml                            README.md front matter check
    POST /api/models/{repo}/preupload/{rev}            which files go through LFS
    POST /{repo}.git/info/lfs/objects/batch            where to PUT each LFS object
    PUT  /_lfs/{oid}  POST /_lfs/verify                the LFS upload and its check
    POST /api/models/{repo}/commit/{rev}               the commit (NDJSON)
    HEAD|GET /{repo}/resolve/{rev}/{path}              hf_hub_download

Every request is recorded in `FakeHub.requests`; anything else is answered 404 and recorded too.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "hf_fake_token_for_tests"
LFS_SUFFIXES = (".safetensors", ".pth", ".bin")


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo -> path -> bytes
    created: list[dict[str, Any]] = field(default_factory=list)
    commits: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    lfs: dict[str, bytes] = field(default_factory=dict)  # oid -> bytes
    unknown: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def commit_oid(self, repo: str) -> str:
        return hashlib.sha1(repr(sorted(self.repos.get(repo, {}).items())).encode()).hexdigest()


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: Any = b"", headers: dict | None = None,
                  head: bool = False) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            ctype = "application/octet-stream" if isinstance(body, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return True
            self._send(401, {"error": "Invalid credentials in Authorization header"})
            return False

        def _record(self) -> str:
            path = self.path.split("?")[0]
            with hub.lock:
                hub.requests.append((self.command, path))
            return path

        def _unknown(self, path: str) -> None:
            with hub.lock:
                hub.unknown.append((self.command, path))
            self._send(404, {"error": f"fake hub: no {self.command} {path}"})

        def do_POST(self):  # noqa: N802
            path = self._record()
            body = self._body()
            if path.startswith("/_lfs/verify"):
                oid = json.loads(body)["oid"]
                return self._send(200 if oid in hub.lfs else 404, {})
            if not self._authorised():
                return
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo = f"{payload['organization']}/{payload['name']}"
                with hub.lock:
                    hub.created.append(payload)
                    if repo in hub.repos:
                        return self._send(409, {"error": "You already created this model repo",
                                                "url": f"{hub.url}/{repo}"})
                    hub.repos[repo] = {}
                return self._send(200, {"url": f"{hub.url}/{repo}"})
            if path == "/api/validate-yaml":
                return self._send(200, {"errors": [], "warnings": []})
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)
            if m:
                files = json.loads(body)["files"]
                return self._send(200, {"files": [
                    {"path": f["path"], "shouldIgnore": False,
                     "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular"}
                    for f in files]})
            m = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
            if m:
                objects = json.loads(body)["objects"]
                return self._send(200, {"transfer": "basic", "objects": [
                    {"oid": o["oid"], "size": o["size"], "authenticated": True, "actions": {
                        "upload": {"href": f"{hub.url}/_lfs/{o['oid']}", "header": {}},
                        "verify": {"href": f"{hub.url}/_lfs/verify", "header": {}}}}
                    for o in objects]})
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)
            if m:
                repo = m.group(1)
                if repo not in hub.repos:
                    return self._send(404, {"error": "Repository not found"},
                                      {"X-Error-Code": "RepoNotFound"})
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                with hub.lock:
                    for item in lines:
                        value = item["value"]
                        if item["key"] == "file":
                            hub.repos[repo][value["path"]] = base64.b64decode(value["content"])
                        elif item["key"] == "lfsFile":
                            hub.repos[repo][value["path"]] = hub.lfs[value["oid"]]
                    hub.commits.append({"repo": repo, "lines": lines})
                    oid = hub.commit_oid(repo)
                return self._send(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}",
                                        "commitOid": oid, "pullRequestUrl": None})
            return self._unknown(path)

        def do_PUT(self):  # noqa: N802
            path = self._record()
            body = self._body()
            m = re.fullmatch(r"/_lfs/([0-9a-f]{64})", path)
            if not m:
                return self._unknown(path)
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return self._send(400, {"error": "sha256 does not match the oid"})
            with hub.lock:
                hub.lfs[m.group(1)] = body
            return self._send(200, {})

        def _resolve(self, head: bool):
            path = self._record()
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if not m or m.group(1) not in hub.repos or m.group(3) not in hub.repos[m.group(1)]:
                return self._send(404, {"error": "Entry not found"},
                                  {"X-Error-Code": "EntryNotFound"}, head=head)
            data = hub.repos[m.group(1)][m.group(3)]
            return self._send(200, data, {"X-Repo-Commit": hub.commit_oid(m.group(1)),
                                          "ETag": f'"{hashlib.sha256(data).hexdigest()}"'},
                              head=head)

        def do_HEAD(self):  # noqa: N802
            self._resolve(head=True)

        def do_GET(self):  # noqa: N802
            self._resolve(head=False)

    return Handler


def start_fake_hub() -> tuple[FakeHub, ThreadingHTTPServer]:
    """A FakeHub served on 127.0.0.1 (a free port) from a daemon thread; `server.shutdown()`."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hub, server
