"""`modalrec export`, `modalrec recommend` and `modalrec serve` (a real subprocess on a loopback port)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modalrec.cli.main import main
from modalrec.serving.artifact import load_artifact


def test_export_then_recommend_prints_titles(content_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "art"
    assert main(["export", "--run", str(content_run.run_dir), "--out", str(out)]) == 0
    art = load_artifact(out)
    capsys.readouterr()
    assert main(["recommend", "--artifact", str(out), "--history", "item00003, item00010", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].lstrip().startswith("1.")
    first_id = lines[0].split()[1]
    assert lines[0].endswith(art.items.fields["title"][art.vocab.index(first_id)])
    assert main(["recommend", "--artifact", str(out), "--similar", first_id, "-k", "2", "--json"]) == 0
    assert '"item_id"' in capsys.readouterr().out
    assert main(["recommend", "--artifact", str(out), "--history", "item00003,ghost"]) == 2
    assert "unknown item id(s): 'ghost'" in capsys.readouterr().err
    assert main(["export", "--run", str(content_run.run_dir), "--out", str(out)]) == 2  # exists


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command_answers_on_loopback(content_artifact: Path, tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    port = _free_port()
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    proc = subprocess.Popen([sys.executable, "-m", "modalrec", "serve", "--artifact", str(content_artifact),
                             "--port", str(port), "--read-only", "--api-key-file", str(key_file),
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.terminate()  # before reading: a live server never closes its stdout
                pytest.fail(f"server not ready within 60 s: {proc.communicate(timeout=10)[0].decode()}")
            time.sleep(0.2)
        r = httpx.post(f"{url}/recommend", json={"history": ["item00003"], "k": 4})
        assert r.status_code == 200 and len(r.json()["items"]) == 4
        assert httpx.post(f"{url}/items", json={"items": [{"id": "z", "fields": {"title": "t"}}]}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
