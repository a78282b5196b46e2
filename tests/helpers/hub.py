"""A stand-in for the Hugging Face Hub's file API on loopback, for tests that cannot reach the Hub.

It answers the requests huggingface_hub makes for ``model_info``, ``snapshot_download`` and
``hf_hub_download``: ``GET /api/models/{repo}[/revision/{rev}]`` (sha and siblings),
``GET /api/models/{repo}/tree/{rev}`` (the file listing), and ``HEAD``/``GET
/{repo}/resolve/{rev}/{path}`` with the ``ETag``, ``X-Repo-Commit`` and ``Content-Length`` headers
huggingface_hub checks. Unknown repositories, revisions and files get 404 with the Hub's
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``); a gated repository's
files get 401 ``GatedRepo`` unless the request carries its token. Every request is counted.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    revisions: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    gated_token: str | None = None  # files need "Authorization: Bearer <token>"

    def __post_init__(self):
        if not self.revisions:
            digest = hashlib.sha1(json.dumps(sorted(self.files)).encode()).hexdigest()
            self.revisions = {"main": digest}

    def commit(self, rev: str) -> str | None:
        if rev in self.revisions:
            return self.revisions[rev]
        return rev if rev in self.revisions.values() else None


def repo_from_folder(folder: Path, **kw) -> Repo:
    folder = Path(folder)
    return Repo({p.relative_to(folder).as_posix(): p.read_bytes()
                 for p in sorted(folder.rglob("*")) if p.is_file()}, **kw)


class FakeHub:
    """``with FakeHub({"owner/name": Repo(...)}) as hub: hub.url``; ``hub.requests`` counts
    ``(method, kind)`` with kind ``info``, ``tree`` or ``file``; ``hub.downloaded`` lists file GETs."""

    def __init__(self, repos: dict[str, Repo]):
        self.repos = repos
        self.requests: Counter = Counter()
        self.downloaded: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- routing -------------------------------------------------------------------------
    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        parts = [unquote(p) for p in urlsplit(h.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            if not rest or rest[0] == "revision":
                return self._info(h, repo_id, rest[1] if len(rest) > 1 else "main")
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(h, repo_id, rest[1])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._file(h, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        self._send(h, 404, {"X-Error-Code": "EntryNotFound"}, b"not a route of this stand-in")

    def _lookup(self, h, repo_id: str, rev: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            self._send(h, 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return None, None
        commit = repo.commit(rev)
        if commit is None:
            self._send(h, 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            return None, None
        return repo, commit

    def _info(self, h, repo_id: str, rev: str) -> None:
        self.requests[(h.command, "info")] += 1
        repo, commit = self._lookup(h, repo_id, rev)
        if repo is None:
            return
        data = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                "gated": "manual" if repo.gated_token else False,
                "siblings": [{"rfilename": name} for name in sorted(repo.files)]}
        self._json(h, data)

    def _tree(self, h, repo_id: str, rev: str) -> None:
        self.requests[(h.command, "tree")] += 1
        repo, commit = self._lookup(h, repo_id, rev)
        if repo is None:
            return
        self._json(h, [{"type": "file", "path": name, "size": len(data), "oid": _etag(data)}
                       for name, data in sorted(repo.files.items())])

    def _file(self, h, repo_id: str, rev: str, name: str, body: bool) -> None:
        self.requests[(h.command, "file")] += 1
        repo, commit = self._lookup(h, repo_id, rev)
        if repo is None:
            return
        if repo.gated_token and h.headers.get("Authorization") != f"Bearer {repo.gated_token}":
            return self._send(h, 401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is "
                                       "restricted", "X-Repo-Commit": commit})
        data = repo.files.get(name)
        if data is None:
            return self._send(h, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        if body:
            self.downloaded.append(f"{repo_id}/{name}")
        self._send(h, 200, {"ETag": f'"{_etag(data)}"', "X-Repo-Commit": commit,
                            "Content-Type": "application/octet-stream"}, data, body)

    def _json(self, h, data) -> None:
        self._send(h, 200, {"Content-Type": "application/json"}, json.dumps(data).encode(), h.command == "GET")

    @staticmethod
    def _send(h, status: int, headers: dict, data: bytes = b"", body: bool = True) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body and data:
            h.wfile.write(data)


def _etag(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
