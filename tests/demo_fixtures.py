"""The demo's real boundaries and GeoIP database, built once per test session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from piecewise.demo.geoip import build_demo_asn_db

ROOT = Path(__file__).resolve().parents[1]
DEMO_JS = ROOT / "infra" / "demo"


def build_demo_data(out: Path) -> Path:
    """Boundaries from the `us-atlas` npm package (installed by `npm ci` when missing)
    and the demo ASN database, as `make demo-data` builds them."""
    if shutil.which("node") is None:
        pytest.fail("node is needed to build the demo boundaries (apt-get install nodejs)")
    if not (DEMO_JS / "node_modules" / "us-atlas").is_dir():
        subprocess.run(
            ["npm", "ci", "--prefix", str(DEMO_JS), "--no-audit", "--no-fund", "--silent"],
            check=True,
        )
    subprocess.run(["node", str(DEMO_JS / "build_boundaries.mjs"), str(out)], check=True)
    build_demo_asn_db(out / "GeoLite2-ASN-demo.mmdb")
    return out


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_data(tmp_path_factory.mktemp("demo"))
