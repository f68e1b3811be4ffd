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

from piecewise.core.config import IspRule
from piecewise.core.vocabulary import ALL_ISPS

UNKNOWN_ISP = "Unknown"
SOURCES = ("maxmind", "mlab", "none")  # where a test's ISP came from
# Address blocks looked up once, widest first: (IPv6?, regex keeping the block's prefix
# as group 1, block width in bits). A string the regex does not match (IPv6 with "::"
# among its first groups, or not an address) stays whole: a block of its own.
_H = "[0-9a-fA-F]{1,4}"
_MAPPED_IPV4 = r"^(?i:::ffff:)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$"
BLOCKS = (
    (False, r"^(\d{1,3}\.\d{1,3})\.\d{1,3}\.\d{1,3}$", 16),
    (False, r"^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$", 24),
    (True, rf"^({_H}:{_H}):[0-9a-fA-F:.]*$", 32),
    (True, rf"^({_H}:{_H}:{_H}):[0-9a-fA-F:.]*$", 48),
)


@dataclass(frozen=True)
class IspLabels:
    """Per-row ISP columns for a batch."""

    asn: pa.Array  # int64
    as_name: pa.Array  # string
    isp: pa.Array  # string, never null
    source: pa.Array  # "maxmind" | "mlab" | "none"
    source_code: np.ndarray  # 0, 1, 2 for the same


class IspNamer:
    """Applies the config's ISP rules: ASN lists first, then organisation-name patterns,
    in the order the rules are written; an unmatched organisation keeps its own name,
    trimmed, unless that name reads as the reserved key `all` (see `_unreserved`)."""

    def __init__(self, rules: list[IspRule]) -> None:
        self._rule_names = {rule.name.strip().casefold() for rule in rules}
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
            if result.casefold() == ALL_ISPS:
                result = self._unreserved(result, asn)
        self._cache[key] = result
        return result

    def _unreserved(self, name: str, asn: int | None) -> str:
        """An organisation named like the all-ISP key (`ALL`, ` All `) gets its AS number
        added, `ALL (AS64500)` (`ALL (no AS number)` without one), once more for as long
        as that is a rule's name: never `all`, never a rule's name."""
        suffix = f" (AS{asn})" if asn else " (no AS number)"
        renamed = name + suffix
        while renamed.casefold() in self._rule_names:
            renamed += suffix
        return renamed


class AsnDatabase:
    """A MaxMind GeoLite2-ASN / GeoIP2-ISP database, read through maxminddb's C extension
    where it is installed (its pure Python reader otherwise: slower, the same answers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
        self.metadata = self._reader.metadata()

    def lookup(self, ips: pa.StringArray) -> tuple[pa.Array, pa.Array]:
        """ASN (int64) and organisation (string) of each distinct address; null where
        the database has no record or the string is not an address.

        Addresses are looked up once per block (IPv4 /16, then /24; IPv6 /32, then
        /48): if the network holding the first address seen of a block is at least as
        wide as the block, it holds the whole block. Addresses in narrower networks are
        looked up one by one."""
        # An IPv4-mapped address (`::ffff:a.b.c.d`) is the IPv4 client (as its key is,
        # piecewise.ingest.clients): a database without IPv4 aliases in its IPv6 tree
        # knows it only as a.b.c.d.
        ips = pc.replace_substring_regex(ips, _MAPPED_IPV4, r"\1")
        n = len(ips)
        group = np.full(n, -1, dtype=np.int64)
        records: list[dict | None] = []
        is_v6 = pc.fill_null(pc.match_substring(ips, ":"), False).to_numpy(zero_copy_only=False)
        present = pc.is_valid(ips).to_numpy(zero_copy_only=False)
        for v6, prefix_pattern, width in BLOCKS:
            idx = np.flatnonzero(present & (is_v6 == v6) & (group < 0))
            if not len(idx):
                continue
            block = pc.replace_substring_regex(ips.take(pa.array(idx)), prefix_pattern, r"\1")
            codes = pc.dictionary_encode(block).indices.to_numpy().astype(np.int64)
            _, first = np.unique(codes, return_index=True)
            wide = np.zeros(len(first), dtype=bool)
            base = len(records)
            for g, ip in enumerate(ips.take(pa.array(idx[first])).to_pylist()):
                try:
                    record, prefix_len = self._reader.get_with_prefix_len(ip)
                except ValueError:  # looks like an address, is not one ("300.1.1.1")
                    record, prefix_len = None, width + 1
                records.append(record)
                wide[g] = prefix_len <= width
            shared = wide[codes]
            group[idx[shared]] = base + codes[shared]
        # Everything else (IPv6, narrow IPv4 networks, not an address): one by one.
        rest = np.flatnonzero(group < 0)
        base = len(records)
        for j, ip in enumerate(ips.take(pa.array(rest)).to_pylist()):
            records.append(self._get_or_none(ip))
            group[rest[j]] = base + j
        asn = pa.array(
            [r.get("autonomous_system_number") if r else None for r in records], pa.int64()
        )
        org = pa.array(
            [
                (r.get("autonomous_system_organization") or r.get("isp")) if r else None
                for r in records
            ],
            pa.string(),
        )
        take = pa.array(group)
        return asn.take(take), org.take(take)

    def _get_or_none(self, ip: str | None) -> dict | None:
        if not ip:
            return None
        try:
            return self._reader.get(ip)
        except ValueError:  # not an IP address
            return None

    def close(self) -> None:
        self._reader.close()


def label_isps(
    ip: pa.Array | pa.ChunkedArray,
    mlab_asn: pa.Array | pa.ChunkedArray,
    mlab_as_name: pa.Array | pa.ChunkedArray,
    namer: IspNamer,
    database: AsnDatabase | None,
) -> IspLabels:
    """ISP columns for a batch; each distinct IP is looked up once."""
    ip, mlab_asn, mlab_as_name = (
        a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
        for a in (ip, mlab_asn, mlab_as_name)
    )
    n = len(ip)
    if database is not None:
        encoded = pc.dictionary_encode(ip)
        d_asn, d_org = database.lookup(encoded.dictionary)
        mm_asn = d_asn.take(encoded.indices)
        mm_org = d_org.take(encoded.indices)
        found = pc.fill_null(pc.is_valid(mm_asn), False)
    else:
        mm_asn = pa.nulls(n, pa.int64())
        mm_org = pa.nulls(n, pa.string())
        found = pa.array(np.zeros(n, dtype=bool))

    mlab_found = pc.or_(pc.is_valid(mlab_asn), pc.is_valid(mlab_as_name))
    asn = pc.if_else(found, mm_asn, mlab_asn)
    org = pc.if_else(found, mm_org, mlab_as_name)
    source_code = np.where(
        found.to_numpy(zero_copy_only=False),
        0,
        np.where(mlab_found.to_numpy(zero_copy_only=False), 1, 2),
    )
    source = pa.array(SOURCES, pa.string()).take(pa.array(source_code))

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
    return IspLabels(asn=asn, as_name=org, isp=isp, source=source, source_code=source_code)
