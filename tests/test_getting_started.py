"""docs/getting-started.md, run as a new operator would: its `sh` blocks in order, in an
empty folder, with `piecewise` on the PATH; each `text` block that follows one is what
that block prints (every line of it appears in the output)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "getting-started.md"

pytestmark = pytest.mark.slow  # node (us-atlas) and a quarter of the pipeline


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of the guide: (info string, body), in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def test_the_guide_runs_as_written(demo_node_modules: Path, tmp_path: Path) -> None:
    found = blocks(GUIDE.read_text(encoding="utf-8"))
    runnable = [i for i, (kind, _) in enumerate(found) if kind == "sh"]
    assert len(runnable) >= 4, "the guide's commands are in sh blocks"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PIECEWISE_SURVEY_SALT", None)
    exports = ""  # what earlier blocks export, as the reader's shell keeps it
    for at in runnable:
        body = found[at][1]
        done = subprocess.run(
            ["bash", "-e", "-c", exports + body],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{body}\n{done.stdout}\n{done.stderr}"
        exports += "".join(line + "\n" for line in body.splitlines() if line.startswith("export "))
        shown = found[at + 1] if at + 1 < len(found) else ("", "")
        if shown[0] == "text":
            for line in shown[1].splitlines():
                if "characters)" in line:  # the salt's length is the reader's
                    line = line.split(" is set")[0]
                assert line in done.stdout, f"{body} does not print:\n{line}\n{done.stdout}"
    assert (tmp_path / "oregon.toml").is_file() and (tmp_path / "front-range.toml").is_file()
    assert (tmp_path / "var/places/oregon/public/v1/index.json").is_file()
