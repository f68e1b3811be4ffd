"""The demo's real boundaries and GeoIP database, built once per test session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from piecewise.demo.geoip import build_demo_asn_db

ROOT = Path(__file__).resolve().parents[1]
DEMO_JS = ROOT / "infra" / "demo"


def install_atlas() -> Path:
    """infra/demo's packages (us-atlas, topojson-client), installed by `npm ci` when
    missing, as `make demo-data` does."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to build U.S. boundaries (apt-get install nodejs)")
    if not (DEMO_JS / "node_modules" / "us-atlas" / "counties-10m.json").is_file():
        subprocess.run(
            ["npm", "ci", "--prefix", str(DEMO_JS), "--no-audit", "--no-fund", "--silent"],
            check=True,
        )
    return DEMO_JS / "node_modules"


def build_demo_data(out: Path) -> Path:
    """Boundaries from the `us-atlas` npm package and the demo ASN database, as `make
    demo-data` builds them."""
    install_atlas()
    subprocess.run(["node", str(DEMO_JS / "build_boundaries.mjs"), str(out)], check=True)
    build_demo_asn_db(out / "GeoLite2-ASN-demo.mmdb")
    return out


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_data(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_node_modules() -> Path:
    return install_atlas()
