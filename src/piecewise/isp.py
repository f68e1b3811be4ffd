"""Which ISP a test belongs to: MaxMind's ASN database for each distinct IP, then the
config's display-name rules, then M-Lab's own `client.Network` as the fallback."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import maxminddb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.config import IspRule

UNKNOWN_ISP = "Unknown"


@dataclass(frozen=True)
class IspLabels:
    """Per-row ISP columns for a batch."""

    asn: pa.Array  # int64
    as_name: pa.Array  # string
    isp: pa.Array  # string, never null
    source: pa.Array  # "maxmind" | "mlab" | "none"


class IspNamer:
    """Applies the config's ISP rules: ASN lists first, then organisation-name patterns,
    in the order the rules are written; an unmatched organisation keeps its own name."""

    def __init__(self, rules: list[IspRule]) -> None:
        self._by_asn: dict[int, str] = {}
        for rule in rules:
            for asn in rule.asns:
                self._by_asn.setdefault(asn, rule.name)
        self._patterns = [
            (re.compile(p, re.IGNORECASE), rule.name) for rule in rules for p in rule.patterns
        ]
        self._cache: dict[tuple[int | None, str | None], str] = {}

    def name(self, asn: int | None, org: str | None) -> str:
        key = (asn, org)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        result = self._by_asn.get(asn) if asn is not None else None
        if result is None and org:
            result = next((name for rx, name in self._patterns if rx.search(org)), None)
        if result is None:
            result = org.strip() if org and org.strip() else (f"AS{asn}" if asn else UNKNOWN_ISP)
        self._cache[key] = result
        return result


class AsnDatabase:
    """A MaxMind GeoLite2-ASN / GeoIP2-ISP database read through the C extension."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = maxminddb.open_database(str(path), maxminddb.MODE_MMAP_EXT)
        self.metadata = self._reader.metadata()

    def lookup(self, ips: list[str | None]) -> tuple[list[int | None], list[str | None]]:
        asns: list[int | None] = []
        orgs: list[str | None] = []
        get = self._reader.get
        for ip in ips:
            rec = None
            if ip:
                try:
                    rec = get(ip)
                except ValueError:  # not an IP address
                    rec = None
            if rec:
                asns.append(rec.get("autonomous_system_number"))
                orgs.append(rec.get("autonomous_system_organization") or rec.get("isp"))
            else:
                asns.append(None)
                orgs.append(None)
        return asns, orgs

    def close(self) -> None:
        self._reader.close()


def label_isps(
    ip: pa.Array,
    mlab_asn: pa.Array,
    mlab_as_name: pa.Array,
    namer: IspNamer,
    database: AsnDatabase | None,
) -> IspLabels:
    """ISP columns for a batch; each distinct IP is looked up once."""
    n = len(ip)
    if database is not None:
        encoded = pc.dictionary_encode(ip)
        distinct = encoded.dictionary.to_pylist()
        d_asn, d_org = database.lookup(distinct)
        idx = encoded.indices
        mm_asn = pc.take(pa.array(d_asn, pa.int64()), idx)
        mm_org = pc.take(pa.array(d_org, pa.string()), idx)
        found = pc.fill_null(pc.is_valid(mm_asn), False)
    else:
        mm_asn = pa.nulls(n, pa.int64())
        mm_org = pa.nulls(n, pa.string())
        found = pa.array(np.zeros(n, dtype=bool))

    mlab_found = pc.or_(pc.is_valid(mlab_asn), pc.is_valid(mlab_as_name))
    asn = pc.if_else(found, mm_asn, mlab_asn)
    org = pc.if_else(found, mm_org, mlab_as_name)
    source = pc.if_else(
        found, pa.scalar("maxmind"), pc.if_else(mlab_found, pa.scalar("mlab"), pa.scalar("none"))
    )

    # Names depend only on (asn, org): resolve each distinct pair once.
    asn_enc = pc.dictionary_encode(asn)
    org_enc = pc.dictionary_encode(org)
    asn_code = pc.fill_null(asn_enc.indices, -1).to_numpy().astype(np.int64) + 1
    org_code = pc.fill_null(org_enc.indices, -1).to_numpy().astype(np.int64) + 1
    pair = pc.dictionary_encode(pa.array(asn_code * (len(org_enc.dictionary) + 1) + org_code))
    asn_values = asn_enc.dictionary.to_pylist()
    org_values = org_enc.dictionary.to_pylist()
    names = []
    for key in pair.dictionary.to_pylist():
        a, o = divmod(key, len(org_values) + 1)
        names.append(namer.name(asn_values[a - 1] if a else None, org_values[o - 1] if o else None))
    isp = pc.take(pa.array(names, pa.string()), pair.indices)
    return IspLabels(asn=asn, as_name=org, isp=isp, source=source)
