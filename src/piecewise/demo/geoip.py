"""A demo GeoLite2-ASN database built from the demo ISP table.

`build_demo_asn_db(path)` writes a MaxMind DB that answers like GeoLite2-ASN for every
block in `piecewise.demo.isps.DEMO_ISPS` (IPv4 and IPv6), so the enrichment step can run
on the demo without a MaxMind licence. Records have the two GeoLite2-ASN keys,
`autonomous_system_number` and `autonomous_system_organization`.

The file is an IPv6 tree with IPv4 in `::/96` (`ipv4_compatible=True`), as readers
expect; it is byte-for-byte deterministic (the build epoch is fixed) and written to a
temporary file beside `path`, then renamed over it, so a reader never sees half a file.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbU32, MMDBWriter
from netaddr import IPSet

from piecewise.demo.isps import DEMO_ISPS, DemoIsp

__all__ = ["DATABASE_TYPE", "DEMO_BUILD_EPOCH", "asn_networks", "build_demo_asn_db"]

DATABASE_TYPE = "GeoLite2-ASN"
# 2026-01-01T00:00:00Z: a fixed build time keeps the file reproducible.
DEMO_BUILD_EPOCH = 1767225600


class _FixedEpochWriter(MMDBWriter):
    """mmdb-writer stamps `build_epoch` with the current time; pin it."""

    def __init__(self, build_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        meta["build_epoch"] = self._build_epoch
        return meta


def asn_networks(isps: Iterable[DemoIsp] = DEMO_ISPS) -> list[tuple[str, int, str]]:
    """Every block of `isps` as (cidr, AS number, MaxMind organisation), sorted by
    address family and network. Raises ValueError when two blocks overlap."""
    rows: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int, str]] = []
    for isp in isps:
        for cidr, system in isp.ipv4_prefixes() + isp.ipv6_prefixes():
            rows.append((ipaddress.ip_network(cidr), system.number, system.maxmind_org))
    rows.sort(key=lambda r: (r[0].version, r[0].network_address, r[0].prefixlen))
    for (a, asn_a, _), (b, asn_b, _) in zip(rows, rows[1:], strict=False):
        if a.version == b.version and a.overlaps(b):
            raise ValueError(f"overlapping demo blocks: {a} (AS{asn_a}) and {b} (AS{asn_b})")
    return [(str(net), asn, org) for net, asn, org in rows]


def build_demo_asn_db(
    path: Path,
    isps: Iterable[DemoIsp] = DEMO_ISPS,
    *,
    build_epoch: int = DEMO_BUILD_EPOCH,
) -> Path:
    """Write the demo GeoLite2-ASN database to `path` (atomically) and return `path`."""
    path = Path(path)
    writer = _FixedEpochWriter(
        build_epoch,
        ip_version=6,
        ipv4_compatible=True,
        database_type=DATABASE_TYPE,
        languages=["en"],
        description={"en": "Piecewise demo ASN database (illustrative, not authoritative)"},
    )
    for cidr, asn, org in asn_networks(isps):
        writer.insert_network(
            IPSet([cidr]),
            {"autonomous_system_number": MmdbU32(asn), "autonomous_system_organization": org},
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer.to_db_file(tmp_name)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
