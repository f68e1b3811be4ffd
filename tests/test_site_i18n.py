"""The site's message catalogues: the build refuses a catalogue that lacks a key, or a
key a page uses that no catalogue has, naming them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parents[1] / "static_site"
CATALOGUES = SITE / "src" / "i18n"


def test_every_catalogue_has_every_key_in_use() -> None:
    catalogues = {p.stem: json.loads(p.read_text()) for p in CATALOGUES.glob("*.json")}
    assert set(catalogues) == {"en", "es"}
    assert set(catalogues["es"]) == set(catalogues["en"])
    # A message's placeholders are the same in every language.
    for key, english in catalogues["en"].items():
        for lang, catalogue in catalogues.items():
            names = lambda text: sorted(part.split("}")[0] for part in text.split("{")[1:])  # noqa: E731
            assert names(catalogue[key]) == names(english), (lang, key)


@pytest.fixture
def site_copy(tmp_path: Path) -> Path:
    """The site's sources in a folder of their own (node_modules linked, not copied)."""
    if shutil.which("node") is None or not (SITE / "node_modules").is_dir():
        pytest.fail("node and static_site/node_modules are needed: run `make site`")
    copy = tmp_path / "site"
    shutil.copytree(SITE, copy, ignore=shutil.ignore_patterns("node_modules", "dist"))
    (copy / "node_modules").symlink_to(SITE / "node_modules")
    return copy


def build(site: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SITE_DIST": str(tmp_path / "dist")}
    return subprocess.run(
        ["node", "build.mjs"], cwd=site, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # node and the site's packages (`make site`)
def test_the_build_fails_on_a_missing_key_and_names_it(site_copy: Path, tmp_path: Path) -> None:
    spanish = site_copy / "src" / "i18n" / "es.json"
    messages = json.loads(spanish.read_text())
    del messages["survey.required"]
    spanish.write_text(json.dumps(messages, ensure_ascii=False))
    done = build(site_copy, tmp_path)
    assert done.returncode != 0 and "es.json lacks survey.required" in done.stderr
    assert not (tmp_path / "dist").exists()


@pytest.mark.slow
def test_the_build_fails_on_a_key_no_catalogue_has(site_copy: Path, tmp_path: Path) -> None:
    page = site_copy / "public" / "speedtest.html"
    page.write_text(page.read_text().replace('data-i18n="speedtest.retry"', 'data-i18n="nope.x"'))
    done = build(site_copy, tmp_path)
    assert done.returncode != 0 and "used but in no catalogue: nope.x" in done.stderr
