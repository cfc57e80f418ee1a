"""Contract test: schemathesis fuzzes every operation of /api/v1/openapi.json on a real server.

It must find no 5xx and no answer that breaks the document (status codes, content types and
bodies all as documented). It runs as the `schemathesis` command with a fixed seed and a
small example budget, with an admin token so that every operation, writes included, is
exercised against a throw-away copy of the demo zone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.api.support import served_api

pytest.importorskip("schemathesis")

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


def schemathesis_command() -> str:
    beside = Path(sys.executable).parent / "schemathesis"
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    if found is None:
        pytest.skip("the schemathesis command is not installed")
    return found


@pytest.mark.slow
def test_openapi_contract_holds_under_fuzzing(tmp_path: Path) -> None:
    """No server error and no response outside the schema, for any generated request."""
    command = schemathesis_command()
    with served_api(tmp_path / "server") as served:
        result = subprocess.run(
            [command, "run", f"{served.url}/api/v1/openapi.json",
             "--header", f"Authorization: Bearer {served.tokens['admin']}",
             "--checks", CHECKS, "--max-examples", "10", "--seed", "20261124",
             "--workers", "1", "--phases", "examples,coverage,fuzzing", "--warnings", "off",
             "--request-timeout", "20"],
            cwd=tmp_path, capture_output=True, text=True, timeout=480)
        log = "".join(served.server.log)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
    assert "internal error" not in log
