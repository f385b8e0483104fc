"""`data fetch` against a loopback HTTP server serving archives the test makes (never the web)."""
import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.data import fetch as fetching

RATINGS = "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n1,20,3.0,964981247\n" \
          "2,10,5.0,964982224\n2,30,2.0,964983815\n3,20,4.0,964982931\n3,30,1.0,964982400\n"


def make_zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


GOOD = make_zip({"ml-tiny/ratings.csv": RATINGS, "ml-tiny/README.txt": "tiny\n"})
ESCAPING = make_zip({"ml-tiny/ratings.csv": RATINGS, "../evil.txt": "outside\n"})


class Server:
    """Serves ``files`` on 127.0.0.1; ``truncate`` cuts a body short; honours Range."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.requests: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append({"path": name, "range": self.headers.get("Range")})
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.truncate.pop(name, None)
                self.wfile.write(body[start:cut])

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def register(monkeypatch, url: str, body: bytes, sha256: str | None = None) -> None:
    archive = fetching.Archive("ml-tiny", url + "ml-tiny.zip", len(body),
                               sha256 or hashlib.sha256(body).hexdigest(), "ml-tiny",
                               "six ratings")
    monkeypatch.setitem(fetching.ARCHIVES, "ml-tiny", archive)


def run(*args: str):
    return CliRunner().invoke(main, ["data", "fetch", *args])


def one_error(result) -> str:
    """The single ``Error:`` line of a failed command (no traceback, nothing else wrong)."""
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def visible(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_fetch_verifies_unpacks_and_prepares(server, monkeypatch, tmp_path):
    server.files["ml-tiny.zip"] = GOOD
    register(monkeypatch, server.url, GOOD)
    cache = tmp_path / "cache"
    result = run("ml-tiny", str(tmp_path / "data"), "--cache-dir", str(cache))
    assert result.exit_code == 0, result.output
    assert "may not be redistributed" in " ".join(result.stderr.split())
    assert "next: recompare data prepare" in " ".join(result.stdout.split())
    assert (tmp_path / "data" / "ml-tiny" / "ratings.csv").read_text() == RATINGS
    assert visible(cache) == ["ml-tiny.zip"]
    prepared = CliRunner().invoke(main, ["data", "prepare", str(tmp_path / "data" / "ml-tiny"),
                                         str(tmp_path / "p"), "--split", "none", "--json"])
    assert prepared.exit_code == 0, prepared.output
    assert json.loads(prepared.stdout)["interactions"] == 6
    # a second fetch into another folder takes the cached archive, no request
    before = len(server.requests)
    again = run("ml-tiny", str(tmp_path / "other"), "--cache-dir", str(cache))
    assert again.exit_code == 0, again.output
    assert len(server.requests) == before


def test_cache_dir_from_the_environment(server, monkeypatch, tmp_path):
    server.files["ml-tiny.zip"] = GOOD
    register(monkeypatch, server.url, GOOD)
    monkeypatch.setenv("RECOMPARE_CACHE", str(tmp_path / "env-cache"))
    assert run("ml-tiny", str(tmp_path / "data")).exit_code == 0
    assert (tmp_path / "env-cache" / "ml-tiny.zip").is_file()


def test_wrong_checksum_is_refused_and_deleted(server, monkeypatch, tmp_path):
    server.files["ml-tiny.zip"] = GOOD
    register(monkeypatch, server.url, GOOD, sha256="0" * 64)
    result = run("ml-tiny", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"))
    error = one_error(result)
    assert "SHA-256" in error and "does not match" in error
    assert visible(tmp_path / "cache") == [] and visible(tmp_path / "data") == []


def test_truncated_download_resumes_on_retry(server, monkeypatch, tmp_path):
    server.files["ml-tiny.zip"] = GOOD
    server.truncate["ml-tiny.zip"] = len(GOOD) // 2
    register(monkeypatch, server.url, GOOD)
    result = run("ml-tiny", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(GOOD) // 2}-"]
    assert (tmp_path / "data" / "ml-tiny" / "ratings.csv").is_file()


def test_download_that_stays_truncated_is_one_error(server, monkeypatch, tmp_path):
    short = GOOD[: len(GOOD) // 2]
    server.files["ml-tiny.zip"] = short  # the server never has more
    register(monkeypatch, server.url, GOOD)
    result = run("ml-tiny", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"))
    assert "cannot download ml-tiny" in one_error(result)
    # nothing in the target; the cache holds only the resumable part, never ml-tiny.zip
    assert visible(tmp_path / "data") == []
    assert visible(tmp_path / "cache") in ([], ["ml-tiny.zip.part"])


def test_archive_with_parent_paths_is_refused(server, monkeypatch, tmp_path):
    server.files["ml-tiny.zip"] = ESCAPING
    register(monkeypatch, server.url, ESCAPING)
    target = tmp_path / "inner" / "data"
    result = run("ml-tiny", str(target), "--cache-dir", str(tmp_path / "cache"))
    assert "outside the target directory" in one_error(result)
    assert not (tmp_path / "inner" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert visible(target) == []


def test_server_down_is_one_error(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    register(monkeypatch, f"http://127.0.0.1:{port}/", GOOD)
    result = run("ml-tiny", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"))
    error = one_error(result)
    assert "cannot download ml-tiny" in error and "refused" in error.lower()
    assert visible(tmp_path / "data") == [] and visible(tmp_path / "cache") == []


def test_list_shows_sizes_and_licenses():
    result = run("--list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) >= {"ml-100k", "ml-1m", "ml-latest-small", "ml-20m", "ml-25m"}
    assert rows["ml-20m"]["bytes"] == 198_702_078
    assert all(len(row["sha256"]) == 64 and "redistributed" in row["license"]
               for row in rows.values())
    table = run("--list")
    assert "ml-25m" in table.stdout and "MB" in table.stdout


def test_bad_names_and_missing_arguments(tmp_path):
    unknown = run("ml-5k", str(tmp_path))
    assert "unknown data set 'ml-5k'" in one_error(unknown)
    assert run().exit_code == 2
