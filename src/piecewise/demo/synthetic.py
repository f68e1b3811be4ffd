"""A synthetic source of NDT tests: realistic, deterministic, fast.

`SyntheticSource(seed=..., tests_per_day=...)` yields rows in exactly the unified schema
(`piecewise.core.schema.UNIFIED`), for any date range, with no network and no M-Lab account.
It powers the demo, the tests and the benchmarks.

Synthetic test data
===================

The synthetic source imitates what M-Lab's `ndt.unified_downloads` and
`ndt.unified_uploads` hold for one region. Its defaults model Washington State with the
demo's places (`piecewise/demo/wa_places.csv`, 90 cities and towns weighted by
population) and providers (`piecewise/demo/isps.py`: Comcast, Lumen, Ziply Fiber,
Astound, Spectrum, T-Mobile and Verizon home internet, Starlink, two small local
providers and two universities). None of it is measured data: it is a model meant to
exercise the pipeline with the shapes real data has, the awkward ones included
(estimated locations, rotating IPv6 addresses, duplicated rows, archive dates that are
not test dates, rows that arrive late).

**Determinism.** The same `seed` gives the same rows. Each test day is generated from
its own random streams, seeded from `(seed, date)`: one for its first 23 UTC hours, one
for its last hour, which the next archive date reads too (see below). So an archive
date's rows are identical whether it is requested alone or inside a longer range, and
alone it costs little more. The client population depends only on the seed and the
settings (rate, places, providers), never on the dates asked for.

**Clients.** There are about `30 × tests_per_day` clients (households). Each has:

- a home place, drawn by place weight, and a home inside it (within the town's extent,
  ~1 km for a village to ~10 km for Seattle, read from the weight as a population).
- a location as GeoIP (GeoLite2-City) estimates it, the same in every test. Each town
  has a few fixed postal-code centroids (one per ~25,000 people, 1 to 40, placed by a
  hash of the town: a property of the places, not of the seed); each state has a
  centroid (the middle of its places' bounding box). A fixed-line client is located

  | kind | share | coordinates | `AccuracyRadiusKm` |
  | --- | --- | --- | --- |
  | near | 10% | within the radius of its home | 1, 2, 5 or 10 |
  | postal | 32% | its postal code's centroid (the nearest to its home) | 10, 20 or 50 |
  | city | 41% | its town's centre (the places table's point) | 25, 50 or 100 |
  | state | 3% | its state's centroid, with no `City` | 500 or 1000 |
  | no radius | 14% | a postal, city or state centroid, as above 32:41:3 | null |

  Mobile and satellite clients, whose carrier-grade NAT and ground-station addresses
  GeoIP places coarsely, are 2% near, 13% postal, 50% city, 15% state and 20% no
  radius. So a town's tests sit on a few dozen points, its centre holding about half
  of them, each point shared by hundreds of clients; City is filled in ~91% of rows
  (m-lab/iqb measured ~90%), and `City` and `Subdivision1ISOCode` are the home's.
- a provider, drawn by market share among the providers that serve the place (some only
  serve a bounding box, e.g. Astound around Puget Sound, Whidbey Telecom on the island);
  satellite and fixed wireless weigh more in small places, cable in large ones.
- a plan tier of that provider (advertised download/upload, drawn by the tier shares);
  the tier fixes the access technology (Lumen sells DSL and fiber, for instance).
- an address inside the provider's blocks, IPv6 for the provider's IPv6 share of
  clients; the demo GeoLite2-ASN database maps it back to the provider's AS. An IPv4
  client keeps one address. An IPv6 household keeps one /64 and has 1–3 devices (40%,
  35%, 25%), each testing from a privacy address (RFC 8981) that changes every UTC day
  (a hash of client, device and day, its groups always four hex digits);
  `ClientPopulation.network` is the client's key as `piecewise.ingest.clients` computes it.
  M-Lab takes AS numbers from RouteViews, so for a few providers a share of clients is
  reported under a sibling AS (Comcast's AS33650 beside AS7922, say). Small blocks can
  give two IPv4 clients one address, as carrier-grade NAT does.
- a home network: three in ten are wired, the rest test over Wi-Fi whose capacity is
  log-normal (median ~350 Mbps), which caps what fast plans can show.
- a test propensity with a heavy (Pareto, α = 1.2, Zipf-like) tail: most clients test
  a few times a year, a few test many times a day (capped at 24 a day, and at 2% of
  all tests).

**When.** The mean number of sessions a day is `tests_per_day`, scaled by the local day
of the week (weekdays ×0.95, Saturday ×1.12, Sunday ×1.13) and spread over local hours
by a diurnal profile with an evening peak (~8–9 pm) and a night trough (~3–5 am); the
weekend profile is flatter and later. Local time is America/Los_Angeles by default
(daylight saving included), and `a.TestTime` is stored in UTC. The count for each UTC
hour is Poisson. A session never straddles midnight UTC.

**Archive dates.** `date` is the date of M-Lab's archive (the views' partition), not
the test's: each row reaches the archive after a delay (exponential, mean 15 minutes,
at most an hour), and a row of the last hour before midnight UTC whose delay carries it
past midnight is archived the next day (about a quarter of that hour's rows, ~1% of a
day's). Asking for date d gives the rows archived on d: d's tests but those, and the
tests of d−1 that spilled over (their `a.TestTime` on d−1). A session's upload can sit
in the next partition while its download does not.

**Late rows.** Each row arrives in the views some days after its archive date: 86% the
next day, then 7%, 3%, 1.5%, 1%, 0.8% and 0.7% on days 2 to 7 (its lag is a hash of the
row; a duplicated row's copy has a lag of its own). With `as_of` (a date), the source
returns what the views held at the end of that day: the rows of archive date d whose
arrival is on or before `as_of` (none before d+1); without it, every row. The rows it
returns are the same with any `as_of` that shows them. The source never reads the
clock: a scheduled demo passes the day it stands for (`with_as_of`).

**Sessions and rows.** Each session is a download row and, for 93% of sessions, an
upload row starting 10.5–12 s later, on the same server. Each row has its own `id`
(equal to `a.UUID`, as in ndt7 data) shaped like ndt7's,
`ndt-<pod>_<server start epoch>_<16-hex-digit counter>`: the pod name and start epoch
change every 28 days per machine and the counter increases through the day.
`server.Site` is an M-Lab site (sea01–sea09, pdx01, yvr01, den02, lax03), drawn with a
weight falling off with distance from the client's place. 0.5% of rows come twice (the
same `id` and values, next to each other), as the union views can return them.

**Performance model** (by access technology; medians, log-normal spreads):

| technology | download / advertised | upload / advertised | MinRTT ms | evening drop |
| --- | --- | --- | --- | --- |
| fiber | 0.85 | 0.85 | 7 | 3% |
| cable | 0.95 | 0.90 | 15 | 15% |
| DSL | 0.80 | 0.80 | 32 | 5% |
| fixed wireless | 0.60 | 0.60 | 40 | 25% |
| LEO satellite | 0.55 | 0.50 | 42 | 25% |
| mobile (4G/5G home) | 0.60 | 0.50 | 52 | 30% |
| campus | 0.60 | 0.60 | 5 | 10% |

- `a.MeanThroughputMbps`: the client's line rate (advertised × a per-client log-normal
  fraction, at most 1.15 × advertised) softly limited by its home network, times a
  per-test log-normal factor whose spread grows from DSL and fiber (σ 0.12–0.15) to
  mobile and satellite (σ 0.4), times an evening-congestion factor for shared media peaking at
  9 pm local. Upload uses the advertised upload speed, so cable and mobile are strongly
  asymmetric and fiber is symmetric.
- `a.MinRTT` (ms): a per-client log-normal around the technology's median, a per-test
  spread, ~1.5 ms per 100 km to the server's site, and some evening bufferbloat.
- `a.LossRate`: for downloads, exactly 0 in 5–40% of tests (fewest on radio links), else
  log-normal around 0.1% (fiber) to 1.5% (radio), at most 25%, higher in the evening;
  for uploads always null, as the unified views give it.

**Annotations.** `client.Geo` has ContinentCode "NA", CountryCode "US",
Subdivision1ISOCode "WA" (no country prefix, as M-Lab stores it), City (null for
state-level locations), Latitude, Longitude (4 decimals) and AccuracyRadiusKm (null
for the no-radius share). About 2% of sessions have no coordinates: in 40% of those the
whole `client.Geo` is null, otherwise only the country is known. About 1% of sessions
have a null `client.Network`. Values are otherwise sane: the pipeline's handling of
absurd values is tested separately.

**Speed.** Everything is vectorised with numpy and Arrow; per-client strings (addresses,
names) are built once and gathered with `take`, only IPv6 rows get addresses of their
own, and small days are built into batches together. On a 2-core machine: ~1.2 M rows
a second for small days (10 days at 2,500 sessions, the clients already built), ~1.25 M
for busy ones (50,000 sessions a day; ~1.4 M for a single day).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import ipaddress
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import NamedTuple, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.core.hours import DEMO_TIMEZONE
from piecewise.core.schema import UNIFIED
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.demo.isps import DEMO_ISPS, AutonomousSystem, DemoIsp, Technology
from piecewise.demo.places import Place, load_demo_places

__all__ = [
    "ARRIVAL_LAG_SHARES",
    "DUPLICATE_SHARE",
    "LOCATION_SHARES",
    "RADIUS_KM",
    "SITES",
    "TECH_PROFILES",
    "ClientPopulation",
    "Location",
    "Place",
    "ServerSite",
    "TECHNOLOGIES",
    "SyntheticSource",
    "TechProfile",
]


@dataclass(frozen=True)
class TechProfile:
    """How an access technology performs (see the module docstring's table)."""

    down_fraction: float  # median achieved / advertised download, per client
    up_fraction: float
    client_sigma: float  # log-normal spread of a client's line rate around that
    test_sigma: float  # per-test log-normal spread of throughput
    rtt_ms: float  # median MinRTT
    rtt_client_sigma: float
    rtt_test_sigma: float
    evening_drop: float  # throughput loss at the evening peak (shared media)
    loss_median: float  # median download loss rate when not zero
    loss_zero_share: float  # share of downloads with a loss rate of exactly zero


TECH_PROFILES: dict[Technology, TechProfile] = {
    Technology.FIBER: TechProfile(0.85, 0.85, 0.2, 0.15, 7.0, 0.25, 0.12, 0.03, 0.001, 0.4),
    Technology.CABLE: TechProfile(0.95, 0.90, 0.2, 0.2, 15.0, 0.2, 0.15, 0.15, 0.004, 0.25),
    Technology.DSL: TechProfile(0.80, 0.80, 0.25, 0.12, 32.0, 0.15, 0.1, 0.05, 0.006, 0.25),
    Technology.FIXED_WIRELESS: TechProfile(0.60, 0.60, 0.35, 0.3, 40.0, 0.2, 0.2, 0.25, 0.015, 0.1),
    Technology.LEO_SATELLITE: TechProfile(0.55, 0.50, 0.3, 0.4, 42.0, 0.15, 0.2, 0.25, 0.01, 0.05),
    Technology.MOBILE: TechProfile(0.60, 0.50, 0.4, 0.4, 52.0, 0.15, 0.2, 0.30, 0.015, 0.1),
    Technology.CAMPUS: TechProfile(0.60, 0.60, 0.5, 0.3, 5.0, 0.3, 0.15, 0.10, 0.001, 0.4),
}


@dataclass(frozen=True)
class ServerSite:
    """An M-Lab site: its code, where it is, and how many machines it has."""

    code: str
    lat: float
    lon: float
    machines: int = 3
    capacity: float = 1.0


_SEA = (47.4489, -122.3094)
SITES: tuple[ServerSite, ...] = (
    *(ServerSite(f"sea0{i}", *_SEA) for i in range(1, 10)),
    ServerSite("pdx01", 45.5887, -122.5975, capacity=2.0),
    ServerSite("yvr01", 49.1947, -123.1792),
    ServerSite("den02", 39.8561, -104.6737, capacity=2.0),
    ServerSite("lax03", 33.9416, -118.4085, capacity=2.0),
)

# Continent of a country, as MaxMind's ContinentCode gives it (the few a region is likely in).
_CONTINENT = {
    **dict.fromkeys(["US", "CA", "MX", "PR", "GT", "CR", "PA", "CU", "JM", "DO"], "NA"),
    **dict.fromkeys(["BR", "AR", "CL", "CO", "PE", "VE", "EC", "UY", "BO", "PY"], "SA"),
    **dict.fromkeys(
        ["GB", "IE", "FR", "DE", "IT", "ES", "PT", "NL", "BE", "CH", "AT", "SE", "NO", "DK"],
        "EU",
    ),
    **dict.fromkeys(["FI", "PL", "CZ", "GR", "RO", "HU", "UA", "RU"], "EU"),
    **dict.fromkeys(["JP", "CN", "IN", "KR", "ID", "PH", "VN", "TH", "MY", "SG", "PK"], "AS"),
    **dict.fromkeys(["NG", "ZA", "KE", "EG", "GH", "ET", "MA", "TZ", "UG"], "AF"),
    **dict.fromkeys(["AU", "NZ", "FJ", "PG"], "OC"),
}

# Diurnal profile by local hour (relative; normalised to mean 1 below).
_WEEKDAY_HOURS = np.array(
    [0.45, 0.3, 0.2, 0.15, 0.15, 0.2, 0.35, 0.6, 0.85, 1.0, 1.05, 1.1]
    + [1.1, 1.1, 1.1, 1.15, 1.25, 1.4, 1.55, 1.7, 1.8, 1.75, 1.4, 0.9]
)
_WEEKEND_HOURS = np.array(
    [0.55, 0.4, 0.25, 0.18, 0.15, 0.17, 0.25, 0.4, 0.65, 0.95, 1.15, 1.25]
    + [1.3, 1.3, 1.3, 1.3, 1.35, 1.4, 1.5, 1.6, 1.65, 1.6, 1.3, 0.9]
)
_WEEKDAY_HOURS /= _WEEKDAY_HOURS.mean()
_WEEKEND_HOURS /= _WEEKEND_HOURS.mean()
_DAY_OF_WEEK = np.array([0.95, 0.95, 0.95, 0.95, 0.95, 1.12, 1.13])  # Monday first


_UPLOAD_SHARE = 0.93
_WIRED_SHARE = 0.3
_PARETO_ALPHA = 1.2
_MAX_DAILY_TESTS = 24.0
_MAX_CLIENT_SHARE = 0.02
_GEO_STRUCT_NULL_SHARE = 0.4  # of the sessions without coordinates
_EVENING_PEAK_HOUR = 21.0
_BOOT_PERIOD_DAYS = 28
_END_OF_DAY_MARGIN_S = 15.0
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_ID_PREFIX_LEN = len("ndt-xxxxx_1234567890_")
_ID_LEN = _ID_PREFIX_LEN + 16
# Each byte's two hex digits, as one uint16 (in memory order).
_HEX_PAIRS = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)
_HEX_PAIRS_UPPER = np.frombuffer(b"".join(f"{i:02X}".encode() for i in range(256)), dtype=np.uint16)


class Location(IntEnum):
    """How GeoIP located a client (see the module doc's table)."""

    NEAR = 0  # near its home, with a small radius
    POSTAL = 1  # its postal code's centroid
    CITY = 2  # its town's centre
    STATE = 3  # its state's centroid (no City)


# Per client, the shares of near, postal, city, state and no radius (at a postal, city or
# state centroid, in the proportions of the three). GeoLite2-City puts most residential
# blocks at a postal or city centroid, only a few near the home; carrier NAT (mobile) and
# ground stations (satellite) coarser. State-level rows have no City: these shares leave
# City filled in ~91% of rows, as m-lab/iqb measured (~90%).
LOCATION_SHARES: dict[str, tuple[float, float, float, float, float]] = {
    "fixed": (0.10, 0.32, 0.41, 0.03, 0.14),
    "radio": (0.02, 0.13, 0.50, 0.15, 0.20),
}
_RADIO = (Technology.MOBILE, Technology.LEO_SATELLITE)

# AccuracyRadiusKm by location kind: values such as GeoLite2-City gives, and weights.
RADIUS_KM: dict[Location, tuple[tuple[int, float], ...]] = {
    Location.NEAR: ((1, 0.15), (2, 0.25), (5, 0.35), (10, 0.25)),
    Location.POSTAL: ((10, 0.3), (20, 0.45), (50, 0.25)),
    Location.CITY: ((25, 0.2), (50, 0.45), (100, 0.35)),
    Location.STATE: ((500, 0.4), (1000, 0.6)),
}
_PEOPLE_PER_POSTAL_CODE = 25_000.0
_MAX_POSTAL_CODES = 40
_MAX_EXTENT_KM = 15.0

# An IPv6 household's devices (1, 2 or 3), each with its own daily privacy address.
_DEVICE_SHARES = (0.4, 0.35, 0.25)

# Rows reach the archive after a truncated exponential delay: only the last UTC hour
# can spill into the next day's partition.
_ARCHIVE_DELAY_MEAN_S = 900.0
_ARCHIVE_DELAY_MAX_S = 3600.0

# Days after its archive date that a row arrives in the views (d+1, d+2, ... d+7).
ARRIVAL_LAG_SHARES: tuple[float, ...] = (0.86, 0.07, 0.03, 0.015, 0.01, 0.008, 0.007)
_LAG_CDF = np.cumsum(ARRIVAL_LAG_SHARES) / sum(ARRIVAL_LAG_SHARES)
_MAX_LAG_DAYS = len(ARRIVAL_LAG_SHARES)

DUPLICATE_SHARE = 0.005  # of rows, each then present twice

# Stream tags keep the population's and the days' random streams apart.
_POPULATION_STREAM = 0x706F70
_DAY_STREAM = 0x646179
_LAST_HOUR_STREAM = 0x6C617374  # a day's last UTC hour, which two archive dates read
_IID_STREAM = 0x696964  # tags the hash that makes privacy addresses


@dataclass(frozen=True)
class ClientPopulation:
    """The synthetic clients, one entry per client in each array (see the module doc).

    Ground truth for tests and demos: `isp` indexes `SyntheticSource.isps`, `tier` the
    ISP's `tiers`; `prefix_asn` is what the demo ASN database says for the client's
    addresses, `mlab_asn` what the rows report."""

    place: np.ndarray  # int32, index into places
    home_lon: np.ndarray  # where the client really is (float64)
    home_lat: np.ndarray
    location: np.ndarray  # int8, a `Location`
    lon: np.ndarray  # reported longitude (float64)
    lat: np.ndarray
    accuracy_km: np.ndarray  # int64, reported radius; 0 where `has_radius` is False
    has_radius: np.ndarray  # bool; False: AccuracyRadiusKm is null
    isp: np.ndarray  # int16
    tier: np.ndarray  # int16, index into the ISP's tiers
    technology: np.ndarray  # int8, index into `TECHNOLOGIES`
    is_ipv6: np.ndarray  # bool
    network: pa.StringArray  # the IPv4 address, or the IPv6 /64 ("2601:600:1::/64")
    ipv6_prefix: np.ndarray  # uint64, the /64's upper half (0 for IPv4 clients)
    ipv6_head: pa.StringArray  # per IPv6 client, in order: the /64's 4 groups, uncompressed
    devices: np.ndarray  # int8, devices an IPv6 household tests from (1 for IPv4)
    prefix_asn: np.ndarray  # int64
    mlab_as: np.ndarray  # int32, index into the flattened AS table
    mlab_asn: np.ndarray  # int64
    line_down: np.ndarray  # Mbps a test would show with no per-test noise or congestion
    line_up: np.ndarray
    rtt_ms: np.ndarray
    propensity: np.ndarray  # expected share of all sessions (sums to 1)

    def __len__(self) -> int:
        return len(self.place)


@dataclass(frozen=True)
class _Geography:
    """Where GeoIP can put a client: per place, its extent and postal centroids; per
    place, its state's centroid. Derived from the places alone (no seed)."""

    extent_km: np.ndarray  # per place
    postal_start: np.ndarray  # per place, its first row in postal_lat/lon (+ a last end)
    postal_lat: np.ndarray
    postal_lon: np.ndarray
    state_lat: np.ndarray  # per place, its state's centroid
    state_lon: np.ndarray


class _Piece(NamedTuple):
    """Rows of a part (`index`, in order) archived on `day`."""

    day: dt.date
    part: _Part
    index: np.ndarray


@dataclass(frozen=True)
class _Part:
    """Rows tested on one day (or a subset: those that spill into the next day), before
    they are split by archive date; every array has one entry per row."""

    day: dt.date
    time_us: np.ndarray
    up: np.ndarray
    mbps: np.ndarray
    rtt: np.ndarray
    loss: np.ndarray
    client: np.ndarray
    site: np.ndarray
    pod: np.ndarray
    counter: np.ndarray  # uint64, the id's counter
    iid: np.ndarray  # uint64, the interface id of an IPv6 row's address
    no_coords: np.ndarray
    geo_null: np.ndarray
    net_null: np.ndarray
    spill: np.ndarray  # archived the next day
    dup: np.ndarray  # present twice

    def subset(self, keep: np.ndarray) -> _Part:
        fields = {
            name: value[keep] for name, value in vars(self).items() if isinstance(value, np.ndarray)
        }
        return _Part(day=self.day, **fields)


TECHNOLOGIES: tuple[Technology, ...] = tuple(Technology)
_T = TypeVar("_T")


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([w % (1 << 64) for w in words]))


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _soft_min(a: np.ndarray, b: np.ndarray, k: float = 4.0) -> np.ndarray:
    return (a ** (-k) + b ** (-k)) ** (-1.0 / k)


def _pick(cdf: np.ndarray, row: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each i, the first column of `cdf[row[i]]` (a table of cumulative
    probabilities, one distribution per row) whose value exceeds `u[i]`."""
    rows, cols = cdf.shape
    offset = np.arange(rows, dtype=np.float64)[:, None]
    flat = (offset + np.minimum(cdf, 1.0)).ravel()
    flat[cols - 1 :: cols] = offset[:, 0] + 1.0  # each row ends at exactly 1
    idx = np.searchsorted(flat, row + np.minimum(u, 1 - 1e-12), side="right")
    return np.minimum(idx - row.astype(np.int64) * cols, cols - 1)


def _cdf(weights: np.ndarray) -> np.ndarray:
    total = weights.sum(axis=-1, keepdims=True)
    return np.cumsum(weights / total, axis=-1)


_HEXTETS: pa.StringArray | None = None


def _hextet_strings() -> pa.StringArray:
    global _HEXTETS
    if _HEXTETS is None:
        _HEXTETS = pa.array([format(i, "x") for i in range(65536)], pa.string())
    return _HEXTETS


def _ipv4_strings(addr: np.ndarray) -> pa.StringArray:
    octets = [pc.cast(pa.array((addr >> s) & 0xFF, pa.uint8()), pa.string()) for s in (24, 16, 8)]
    octets.append(pc.cast(pa.array(addr & 0xFF, pa.uint8()), pa.string()))
    return pc.binary_join_element_wise(*octets, ".")


def _ipv6_strings(hi: np.ndarray, lo: np.ndarray) -> pa.StringArray:
    """RFC 5952 text of the addresses whose halves are `hi`, `lo` (uint64)."""
    words = np.empty((len(hi), 8), dtype=np.uint16)
    for k in range(4):
        words[:, k] = (hi >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF)
        words[:, 4 + k] = (lo >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF)
    table = _hextet_strings()
    text = pc.binary_join_element_wise(*(table.take(words[:, k]) for k in range(8)), ":")
    # Uncompressed text is canonical unless two zero groups are adjacent: redo those.
    zero = words == 0
    needs = (zero[:, :-1] & zero[:, 1:]).any(axis=1)
    if needs.any():
        fixed = [
            str(ipaddress.IPv6Address((int(h) << 64) | int(lo_)))
            for h, lo_ in zip(hi[needs], lo[needs], strict=True)
        ]
        text = pc.replace_with_mask(text, pa.array(needs), pa.array(fixed, pa.string()))
    return text


def _fixed_width_strings(data: np.ndarray) -> pa.StringArray:
    """A string array from an (n, width) uint8 matrix of ASCII."""
    n, width = data.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))
    )


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a well-spread uint64 hash of each value."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _radius_table() -> tuple[np.ndarray, np.ndarray]:
    """RADIUS_KM as (values, cdf) matrices with one row per kind (padded)."""
    width = max(len(v) for v in RADIUS_KM.values())
    values = np.zeros((len(Location), width), dtype=np.int64)
    weights = np.zeros((len(Location), width))
    for kind, pairs in RADIUS_KM.items():
        for k, (value, weight) in enumerate(pairs):
            values[kind, k], weights[kind, k] = value, weight
    cdf = _cdf(weights)
    cdf[np.isclose(cdf, 1.0, rtol=0, atol=1e-9)] = 1.0  # padding is never picked
    return values, cdf


class SyntheticSource:
    """Synthetic NDT tests for a region (a `piecewise.ingest.sources.base.Source`).

    Keyword arguments: `seed`; `tests_per_day`, the mean number of sessions a day over
    the whole region (each gives a download and usually an upload row); `places`
    (default: the demo's Washington places); `isps` (default: the demo table);
    `batch_size`, rows per batch; `as_of`, a date: give only the rows the views held at
    the end of that day (default: every row). Tuning: `clients_per_daily_test`
    (population size per daily session), `null_geo_fraction` (sessions without
    coordinates), `null_network_fraction`, `timezone` (local time for the diurnal and
    weekly cycle), `sites` (M-Lab servers)."""

    def __init__(
        self,
        *,
        seed: int,
        tests_per_day: float,
        places: Sequence[Place] | None = None,
        isps: Sequence[DemoIsp] | None = None,
        batch_size: int = 65536,
        as_of: dt.date | None = None,
        clients_per_daily_test: float = 30.0,
        null_geo_fraction: float = 0.02,
        null_network_fraction: float = 0.01,
        timezone: str = DEMO_TIMEZONE,
        sites: Sequence[ServerSite] = SITES,
    ) -> None:
        if not (math.isfinite(tests_per_day) and tests_per_day >= 0):
            raise ValueError("tests_per_day must be a non-negative number")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        if clients_per_daily_test <= 0:
            raise ValueError("clients_per_daily_test must be positive")
        for name, value in (
            ("null_geo_fraction", null_geo_fraction),
            ("null_network_fraction", null_network_fraction),
        ):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be within [0, 1]")
        self.seed = int(seed)
        self.tests_per_day = float(tests_per_day)
        self.places: tuple[Place, ...] = tuple(load_demo_places() if places is None else places)
        self.isps: tuple[DemoIsp, ...] = tuple(DEMO_ISPS if isps is None else isps)
        if not self.places:
            raise ValueError("at least one place is needed")
        if not self.isps:
            raise ValueError("at least one ISP is needed")
        if not sites:
            raise ValueError("at least one server site is needed")
        self.batch_size = int(batch_size)
        self.as_of = _check_as_of(as_of)
        self.clients_per_daily_test = float(clients_per_daily_test)
        self.null_geo_fraction = float(null_geo_fraction)
        self.null_network_fraction = float(null_network_fraction)
        self.timezone = ZoneInfo(timezone)
        self.sites: tuple[ServerSite, ...] = tuple(sites)

        # Flattened tables that per-client indices point into.
        self._systems: list[tuple[int, AutonomousSystem]] = [
            (i, s) for i, isp in enumerate(self.isps) for s in isp.systems
        ]
        self._as_numbers = np.array([s.number for _, s in self._systems], dtype=np.int64)
        self._as_names = pa.array([s.mlab_name for _, s in self._systems], pa.string())
        self._place_names = pa.array([p.name for p in self.places], pa.string())
        self._place_subdivisions = pa.array([p.subdivision for p in self.places], pa.string())
        self._place_countries = pa.array([p.country for p in self.places], pa.string())
        self._place_continents = pa.array(
            [_CONTINENT.get(p.country) for p in self.places], pa.string()
        )
        self._site_codes = pa.array([s.code for s in self.sites], pa.string())
        self._directions = pa.array(DIRECTIONS, pa.string())
        plat = np.array([p.lat for p in self.places])
        plon = np.array([p.lon for p in self.places])
        slat = np.array([s.lat for s in self.sites])
        slon = np.array([s.lon for s in self.sites])
        dist = _haversine_km(plat[:, None], plon[:, None], slat[None, :], slon[None, :])
        cap = np.array([s.capacity for s in self.sites])
        self._site_cdf = _cdf(cap[None, :] * (np.exp(-dist / 400.0) + 0.005))
        self._site_rtt_ms = dist * 0.015  # ~1.5 ms per 100 km, path inflation included
        self._machines = np.array([s.machines for s in self.sites], dtype=np.int64)
        self._pod_offset = np.concatenate([[0], np.cumsum(self._machines)[:-1]])
        self._tech_index = {t: k for k, t in enumerate(TECHNOLOGIES)}
        profiles = [TECH_PROFILES[t] for t in TECHNOLOGIES]
        self._tech_test_sigma = np.array([p.test_sigma for p in profiles])
        self._tech_rtt_sigma = np.array([p.rtt_test_sigma for p in profiles])
        self._tech_evening = np.array([p.evening_drop for p in profiles])
        self._tech_loss = np.array([p.loss_median for p in profiles])
        self._tech_loss_zero = np.array([p.loss_zero_share for p in profiles])
        # Per-day results that consecutive archive dates share (see `_cached`): small
        # tables, and the rows that spill into the next day (the only sizeable ones).
        self._day_cache: dict[tuple[str, dt.date], object] = {}
        self._spill_cache: dict[tuple[str, dt.date], object] = {}

    def with_as_of(self, as_of: dt.date | None) -> SyntheticSource:
        """The same source as the views stood at the end of `as_of` (None: every row);
        it shares this one's clients, so a scheduled run need not rebuild them."""
        other = copy.copy(self)
        other.as_of = _check_as_of(as_of)
        return other

    # -- the population -------------------------------------------------------------

    @property
    def n_clients(self) -> int:
        return max(1, round(self.tests_per_day * self.clients_per_daily_test))

    @cached_property
    def population(self) -> ClientPopulation:
        """The clients (built on first use, from the seed and settings only)."""
        return self._build_population()

    @cached_property
    def _cum_propensity(self) -> np.ndarray:
        return np.cumsum(self.population.propensity)

    @cached_property
    def geography(self) -> _Geography:
        """Each place's extent and postal centroids, each state's centroid: fixed by the
        places alone, so they stay put whatever the seed."""
        places = self.places
        weight = np.array([p.weight for p in places])
        lat = np.array([p.lat for p in places])
        lon = np.array([p.lon for p in places])
        # A town's radius grows with the square root of its population (~10 km: Seattle).
        extent = np.minimum(1.0 + 0.01 * np.sqrt(weight), _MAX_EXTENT_KM)
        count = np.clip(np.round(weight / _PEOPLE_PER_POSTAL_CODE), 1, _MAX_POSTAL_CODES)
        count = count.astype(np.int64)
        start = np.concatenate([[0], np.cumsum(count)])
        postal_lat = np.empty(start[-1])
        postal_lon = np.empty(start[-1])
        for i, p in enumerate(places):
            key = f"{p.country}|{p.subdivision}|{p.name}|{p.lat:.4f}|{p.lon:.4f}"
            rng = np.random.default_rng(_stable_hash(key))
            dist = extent[i] * np.sqrt(rng.uniform(0.02, 1.0, count[i]))
            bearing = rng.uniform(0, 2 * np.pi, count[i])
            lat_i, lon_i = _offset(lat[i], lon[i], dist, bearing)
            postal_lat[start[i] : start[i + 1]] = lat_i
            postal_lon[start[i] : start[i + 1]] = lon_i
        # A state's centroid: the middle of its places' bounding box.
        states: dict[tuple[str, str], list[int]] = {}
        for i, p in enumerate(places):
            states.setdefault((p.country, p.subdivision), []).append(i)
        state_lat = np.empty(len(places))
        state_lon = np.empty(len(places))
        for members in states.values():
            idx = np.array(members)
            state_lat[idx] = round((lat[idx].min() + lat[idx].max()) / 2, 4)
            state_lon[idx] = round((lon[idx].min() + lon[idx].max()) / 2, 4)
        return _Geography(
            extent_km=extent,
            postal_start=start,
            postal_lat=np.round(postal_lat, 4),
            postal_lon=np.round(postal_lon, 4),
            state_lat=state_lat,
            state_lon=state_lon,
        )

    def _locate(
        self, rng: np.random.Generator, place: np.ndarray, tech: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Each client's home, and where and how precisely GeoIP puts it."""
        n = len(place)
        geo = self.geography
        plat = np.array([p.lat for p in self.places])[place]
        plon = np.array([p.lon for p in self.places])[place]
        km_per_lon = 111.32 * np.cos(np.radians(np.array([p.lat for p in self.places])))[place]
        # Home: a 2-D normal offset from the centre (0.6 × the town's extent a side),
        # at most 1.5 extents away.
        extent = geo.extent_km[place]
        dx, dy = rng.standard_normal(n), rng.standard_normal(n)
        scale = 0.6 * extent * np.minimum(1.0, 2.5 / np.maximum(np.hypot(dx, dy), 1e-9))
        home_lat = plat + dy * scale / 111.32
        home_lon = plon + dx * scale / km_per_lon

        # The kind: near, postal, city, state, or one of the last three with no radius.
        radio = np.array([t in _RADIO for t in TECHNOLOGIES])[tech].astype(np.int64)
        shares = np.array([LOCATION_SHARES["fixed"], LOCATION_SHARES["radio"]])
        centroid = shares[:, Location.POSTAL : Location.STATE + 1]
        no_radius = shares[:, -1:] * centroid / centroid.sum(axis=1, keepdims=True)
        choice = _pick(_cdf(np.hstack([shares[:, :-1], no_radius])), radio, rng.random(n))
        has_radius = choice < len(Location)
        kind = np.where(has_radius, choice, choice - len(Location) + Location.POSTAL)
        kind = kind.astype(np.int8)
        values, cdf = _radius_table()
        radius = values[kind, _pick(cdf, kind.astype(np.int64), rng.random(n))]

        lat = plat.copy()  # the town's centre: CITY
        lon = plon.copy()
        near = np.flatnonzero(kind == Location.NEAR)
        # Near: somewhere within the radius of the home (a 2-D normal, radius/2 a side).
        dx, dy = rng.standard_normal(len(near)), rng.standard_normal(len(near))
        scale = 0.5 * radius[near] * np.minimum(1.0, 2.0 / np.maximum(np.hypot(dx, dy), 1e-9))
        lat[near] = np.round(home_lat[near] + dy * scale / 111.32, 4)
        lon[near] = np.round(home_lon[near] + dx * scale / km_per_lon[near], 4)
        postal = np.flatnonzero(kind == Location.POSTAL)
        lat[postal], lon[postal] = self._nearest_postal(
            place[postal], home_lat[postal], home_lon[postal]
        )
        state = np.flatnonzero(kind == Location.STATE)
        lat[state], lon[state] = geo.state_lat[place[state]], geo.state_lon[place[state]]
        return {
            "home_lat": home_lat,
            "home_lon": home_lon,
            "location": kind,
            "lat": lat,
            "lon": lon,
            "accuracy_km": np.where(has_radius, radius, 0).astype(np.int64),
            "has_radius": has_radius,
        }

    def _nearest_postal(
        self, place: np.ndarray, lat: np.ndarray, lon: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The postal centroid of each client's place nearest to its home."""
        geo = self.geography
        out_lat = np.empty(len(place))
        out_lon = np.empty(len(place))
        order = np.argsort(place, kind="stable")
        sorted_place = place[order]
        bounds = np.flatnonzero(np.r_[True, sorted_place[1:] != sorted_place[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            who = order[a:b]
            p = sorted_place[a]
            lo, hi = geo.postal_start[p], geo.postal_start[p + 1]
            qlat, qlon = geo.postal_lat[lo:hi], geo.postal_lon[lo:hi]
            # Within a town, an equirectangular distance orders points correctly.
            coslat = math.cos(math.radians(float(qlat[0])))
            d2 = (lat[who, None] - qlat[None, :]) ** 2 + (
                (lon[who, None] - qlon[None, :]) * coslat
            ) ** 2
            k = np.argmin(d2, axis=1)
            out_lat[who], out_lon[who] = qlat[k], qlon[k]
        return out_lat, out_lon

    def _build_population(self) -> ClientPopulation:
        rng = _rng(self.seed, _POPULATION_STREAM)
        n = self.n_clients
        places, isps = self.places, self.isps

        # Home place.
        weights = np.array([p.weight for p in places], dtype=np.float64)
        place = np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(n), side="right")
        place = np.minimum(place, len(places) - 1).astype(np.int32)

        # Provider, by market share among those serving the place.
        share = np.array([isp.market_share for isp in isps])
        pw = np.array([p.weight for p in places])
        lons = np.array([p.lon for p in places])
        lats = np.array([p.lat for p in places])
        serves = np.ones((len(places), len(isps)), dtype=bool)
        for j, isp in enumerate(isps):
            if isp.service_bbox is not None:
                w, s, e, nn = isp.service_bbox
                serves[:, j] = (lons >= w) & (lons <= e) & (lats >= s) & (lats <= nn)
        affinity = np.array([isp.rural_affinity for isp in isps])
        smallness = np.median(pw) / pw
        mult = np.clip(smallness[:, None] ** affinity[None, :], 0.2, 5.0)
        isp_w = share[None, :] * mult * serves
        empty = isp_w.sum(axis=1) == 0
        isp_w[empty] = share[None, :] * mult[empty]
        isp = _pick(_cdf(isp_w), place, rng.random(n)).astype(np.int16)
        by_isp = np.argsort(isp, kind="stable")
        bounds = np.searchsorted(isp[by_isp], np.arange(len(isps) + 1))
        members = [by_isp[bounds[j] : bounds[j + 1]] for j in range(len(isps))]

        # Plan tier and technology.
        tier = np.zeros(n, dtype=np.int16)
        tech = np.zeros(n, dtype=np.int8)
        adv_down = np.zeros(n)
        adv_up = np.zeros(n)
        u_tier = rng.random(n)
        for j, prov in enumerate(isps):
            sel = members[j]
            if not len(sel):
                continue
            tcdf = _cdf(np.array([t.share for t in prov.tiers]))
            k = np.minimum(np.searchsorted(tcdf, u_tier[sel], side="right"), len(tcdf) - 1)
            tier[sel] = k
            tech[sel] = np.array(
                [self._tech_index[prov.tier_technology(t)] for t in prov.tiers], dtype=np.int8
            )[k]
            adv_down[sel] = np.array([t.down_mbps for t in prov.tiers])[k]
            adv_up[sel] = np.array([t.up_mbps for t in prov.tiers])[k]

        # Home and GeoIP location (coarser on radio links, so after the technology).
        located = self._locate(rng, place, tech)

        # Address, AS as the database has it, AS as M-Lab reports it.
        ipv6_share = np.array([p.ipv6_share for p in isps])
        is_ipv6 = rng.random(n) < ipv6_share[isp]
        prefix_sys = np.zeros(n, dtype=np.int32)
        ipv6_prefix = np.zeros(n, dtype=np.uint64)
        u_prefix = rng.random(n)
        sys_index = {(i, s.number): k for k, (i, s) in enumerate(self._systems)}
        pieces_idx: list[np.ndarray] = []
        pieces_txt: list[pa.Array] = []
        for j, prov in enumerate(isps):
            for v6 in (False, True):
                sel = members[j][is_ipv6[members[j]] == v6]
                if not len(sel):
                    continue
                prefixes = prov.ipv6_prefixes() if v6 else prov.ipv4_prefixes()
                k = np.minimum((u_prefix[sel] * len(prefixes)).astype(np.int64), len(prefixes) - 1)
                prefix_sys[sel] = np.array([sys_index[(j, s.number)] for _, s in prefixes])[k]
                cidrs = [c for c, _ in prefixes]
                if v6:
                    ipv6_prefix[sel] = self._ipv6_prefixes(rng, cidrs, k)
                else:
                    pieces_idx.append(sel)
                    pieces_txt.append(self._ipv4_addresses(rng, cidrs, k))
        v6_clients = np.flatnonzero(is_ipv6)
        ipv6_head = _ipv6_head_strings(ipv6_prefix[v6_clients])
        pieces_idx.append(v6_clients)
        pieces_txt.append(_ipv6_network_strings(ipv6_prefix[v6_clients], ipv6_head))
        order = np.argsort(np.concatenate(pieces_idx), kind="stable")
        network = pa.concat_arrays(pieces_txt).take(pa.array(order))
        devices = np.where(
            is_ipv6,
            1 + _pick(_cdf(np.array([_DEVICE_SHARES])), np.zeros(n, np.int64), rng.random(n)),
            1,
        ).astype(np.int8)

        mlab_sys = prefix_sys.copy()
        sibling_rate = np.array([p.mlab_sibling_rate for p in isps])
        use_sibling = rng.random(n) < sibling_rate[isp]
        u_sib = rng.random(n)
        for j, prov in enumerate(isps):
            if len(prov.systems) < 2:
                continue
            siblings = np.array([sys_index[(j, s.number)] for s in prov.systems])
            sel = members[j][use_sibling[members[j]]]
            if not len(sel):
                continue
            # Any AS of the provider other than the address's own.
            k = (u_sib[sel] * (len(siblings) - 1)).astype(np.int64)
            own = np.searchsorted(siblings, prefix_sys[sel])
            k = np.where(k >= own, k + 1, k)
            mlab_sys[sel] = siblings[np.minimum(k, len(siblings) - 1)]

        # Line rates, home network and latency.
        profiles = [TECH_PROFILES[t] for t in TECHNOLOGIES]
        down_frac = np.array([p.down_fraction for p in profiles])[tech]
        up_frac = np.array([p.up_fraction for p in profiles])[tech]
        client_sigma = np.array([p.client_sigma for p in profiles])[tech]
        line_down = adv_down * down_frac * np.exp(client_sigma * rng.standard_normal(n))
        line_up = adv_up * up_frac * np.exp(client_sigma * rng.standard_normal(n))
        line_down = np.minimum(line_down, adv_down * 1.15)
        line_up = np.minimum(line_up, adv_up * 1.15)
        wired = rng.random(n) < _WIRED_SHARE
        home = np.where(wired, 940.0, 350.0) * np.exp(
            np.where(wired, 0.05, 0.55) * rng.standard_normal(n)
        )
        home = np.clip(home, 20.0, 2300.0)
        line_down = _soft_min(line_down, home)
        line_up = _soft_min(line_up, home * 0.9)
        rtt_median = np.array([p.rtt_ms for p in profiles])[tech]
        rtt_sigma = np.array([p.rtt_client_sigma for p in profiles])[tech]
        rtt = rtt_median * np.exp(rtt_sigma * rng.standard_normal(n))

        # Test propensity: Pareto tail, capped.
        w = (1.0 - rng.random(n)) ** (-1.0 / _PARETO_ALPHA)
        cap_share = max(
            min(_MAX_DAILY_TESTS / max(self.tests_per_day, 1e-9), _MAX_CLIENT_SHARE), 1.0 / n
        )
        for _ in range(4):
            w = np.minimum(w, cap_share * w.sum())
        propensity = w / w.sum()

        return ClientPopulation(
            place=place,
            **located,
            isp=isp,
            tier=tier,
            technology=tech,
            is_ipv6=is_ipv6,
            network=network,
            ipv6_prefix=ipv6_prefix,
            ipv6_head=ipv6_head,
            devices=devices,
            prefix_asn=self._as_numbers[prefix_sys],
            mlab_as=mlab_sys,
            mlab_asn=self._as_numbers[mlab_sys],
            line_down=line_down,
            line_up=line_up,
            rtt_ms=rtt,
            propensity=propensity,
        )

    @staticmethod
    def _ipv4_addresses(
        rng: np.random.Generator, cidrs: list[str], which: np.ndarray
    ) -> pa.StringArray:
        nets = [ipaddress.ip_network(c) for c in cidrs]
        base = np.array([int(net.network_address) for net in nets], dtype=np.int64)[which]
        size = np.array([net.num_addresses for net in nets], dtype=np.int64)[which]
        addr = base + (rng.random(len(which)) * size).astype(np.int64)
        addr = (addr & ~0xFF) | (1 + (addr & 0xFF) % 254)  # no .0 or .255
        return _ipv4_strings(addr)

    @staticmethod
    def _ipv6_prefixes(rng: np.random.Generator, cidrs: list[str], which: np.ndarray) -> np.ndarray:
        """A random /64 (its upper 64 bits) inside each chosen block."""
        nets = [ipaddress.ip_network(c) for c in cidrs]
        full = (1 << 64) - 1
        net_hi = np.array([int(net.network_address) >> 64 for net in nets], dtype=np.uint64)
        fixed = np.array(
            [full ^ ((1 << (64 - net.prefixlen)) - 1) for net in nets], dtype=np.uint64
        )
        rand_hi = rng.integers(0, full, len(which), dtype=np.uint64, endpoint=True)
        return (net_hi[which] & fixed[which]) | (rand_hi & ~fixed[which])

    @cached_property
    def _address_heads(self) -> tuple[pa.StringArray, np.ndarray]:
        """Per client, the start of every address it tests from: an IPv4 client's
        address, an IPv6 client's /64 as four groups, uncompressed ("2601:600:1:0");
        and whether that /64 has two zero groups in a row (then the address's text
        needs "::", which only the long way gives)."""
        pop = self.population
        v6 = pop.is_ipv6
        heads = pc.replace_with_mask(pop.network, pa.array(v6), pop.ipv6_head)
        hi = pop.ipv6_prefix[v6]
        zero = np.stack([(hi >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF) for k in range(4)], 1)
        zero = zero == 0
        unsure = np.zeros(len(pop), dtype=bool)
        unsure[v6] = (zero[:, :-1] & zero[:, 1:]).any(axis=1)
        return heads, unsure

    def _addresses(self, client: np.ndarray, iid: np.ndarray) -> pa.StringArray:
        """Each row's address: an IPv4 client's own; for an IPv6 client its /64 and the
        interface id `iid` (which `_interface_ids` made four hex digits a group, so
        never zero groups, and the text needs no "::" unless the /64 does)."""
        heads, unsure = self._address_heads
        v6 = self.population.is_ipv6[client]
        n = int(v6.sum())
        # ":xxxx:xxxx:xxxx:xxxx" for IPv6 rows and "" for IPv4 rows, in one buffer.
        data = np.empty((n, 4, 5), dtype=np.uint8)
        data[:, :, 0] = ord(":")
        pairs = _HEX_PAIRS[iid[v6].astype(">u8").view(np.uint8)]
        data[:, :, 1:] = pairs.view(np.uint8).reshape(n, 4, 4)
        offsets = np.zeros(len(client) + 1, dtype=np.int32)
        np.cumsum(v6 * 20, out=offsets[1:])
        tails = pa.StringArray.from_buffers(
            len(client), pa.py_buffer(offsets), pa.py_buffer(data.reshape(-1))
        )
        text = pc.binary_join_element_wise(heads.take(pa.array(client)), tails, "")
        needs = unsure[client]
        if needs.any():  # RFC 5952 compresses the /64's zero groups: the long way
            redo = _ipv6_strings(self.population.ipv6_prefix[client[needs]], iid[needs])
            text = pc.replace_with_mask(text, pa.array(needs), redo)
        return text

    # -- days -------------------------------------------------------------------------

    def _hour_rates(self, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        """Expected sessions in each UTC hour of `day`, and each hour's UTC offset (h)."""
        return _cached(self._day_cache, ("rates", day), lambda: self._compute_hour_rates(day))

    def _compute_hour_rates(self, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        rates = np.empty(24)
        offsets = np.empty(24)
        for h in range(24):
            local = (start + dt.timedelta(hours=h)).astimezone(self.timezone)
            offset = local.utcoffset() or dt.timedelta(0)
            offsets[h] = offset.total_seconds() / 3600.0
            profile = _WEEKEND_HOURS if local.weekday() >= 5 else _WEEKDAY_HOURS
            rates[h] = self.tests_per_day / 24.0 * _DAY_OF_WEEK[local.weekday()]
            rates[h] *= profile[local.hour]
        return rates, offsets

    def expected_sessions(self, day: dt.date) -> float:
        """Mean number of sessions tested on `day` (UTC; a few are archived on the next)."""
        return float(self._hour_rates(day)[0].sum())

    def _test_day(self, day: dt.date, last_hour_only: bool = False) -> _Part | None:
        """Every row tested on `day` (UTC), or only those of its last hour: the first 23
        hours come from the day's random stream, the last from one of its own, so the
        next archive date can have that hour's spilled rows without the whole day."""
        segments = [(_DAY_STREAM, 0, 23), (_LAST_HOUR_STREAM, 23, 24)]
        if last_hour_only:
            segments = segments[1:]
        rngs = [_rng(self.seed, tag, day.toordinal()) for tag, _, _ in segments]
        rates, offsets = self._hour_rates(day)
        counts = [r.poisson(rates[a:b]) for r, (_, a, b) in zip(rngs, segments, strict=True)]
        sizes = [int(c.sum()) for c in counts]
        n = sum(sizes)
        if n == 0:
            return None
        pop = self.population

        def draw(
            sizes: list[int], make: Callable[[np.random.Generator, int], np.ndarray]
        ) -> np.ndarray:
            parts = [make(r, k) for r, k in zip(rngs, sizes, strict=True)]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        def uniform(r: np.random.Generator, k: int) -> np.ndarray:
            return r.random(k)

        # Session start times: uniform within each UTC hour, sorted.
        hour = np.concatenate(
            [np.repeat(np.arange(a, b), c) for (_, a, b), c in zip(segments, counts, strict=True)]
        )
        span = np.where(hour == 23, 3600.0 - _END_OF_DAY_MARGIN_S, 3600.0)
        sec = np.sort(hour * 3600.0 + draw(sizes, uniform) * span)
        hour = (sec // 3600).astype(np.int64)
        local_h = (sec / 3600.0 + offsets[hour]) % 24.0
        dh = np.abs(local_h - _EVENING_PEAK_HOUR)
        dh = np.minimum(dh, 24.0 - dh)
        evening = np.exp(-0.5 * (dh / 1.5) ** 2)

        # Sessions: who, where to, from which device, what went missing.
        # (Sorted keys make the search cache-friendly; the permutation undoes the order.)
        cum = self._cum_propensity
        keys = draw(sizes, lambda r, k: np.sort(r.random(k))) * cum[-1]
        client = np.minimum(np.searchsorted(cum, keys, side="right"), len(pop) - 1)
        first = np.repeat(np.cumsum(sizes) - sizes, sizes)
        client = client[draw(sizes, lambda r, k: r.permutation(k)) + first]
        place = pop.place[client]
        site = _pick(self._site_cdf, place, draw(sizes, uniform))
        machine = (draw(sizes, uniform) * self._machines[site]).astype(np.int64)
        pod = self._pod_offset[site] + machine
        has_up = draw(sizes, uniform) < _UPLOAD_SHARE
        device = (draw(sizes, uniform) * pop.devices[client]).astype(np.uint64)
        u_geo = draw(sizes, uniform)
        no_coords = u_geo < self.null_geo_fraction
        geo_null = u_geo < self.null_geo_fraction * _GEO_STRUCT_NULL_SHARE
        net_null = draw(sizes, uniform) < self.null_network_fraction
        tech = pop.technology[client]
        drop = 1.0 - self._tech_evening[tech] * evening
        rtt_session = pop.rtt_ms[client] * (1.0 + 0.5 * self._tech_evening[tech] * evening)
        rtt_session += self._site_rtt_ms[place, site]
        iid = np.zeros(n, dtype=np.uint64)  # IPv4 sessions have none
        v6 = np.flatnonzero(pop.is_ipv6[client])
        iid[v6] = self._interface_ids(client[v6], device[v6], day)

        # Rows: download, then (usually) upload; each segment's rows follow each other.
        reps = 1 + has_up.astype(np.int64)
        starts = np.cumsum(reps) - reps
        rows = int(reps.sum())
        segment = np.repeat(np.arange(len(sizes)), sizes)
        row_sizes = np.bincount(segment, weights=reps, minlength=len(sizes)).astype(int).tolist()
        s = np.repeat(np.arange(n), reps)
        up = np.zeros(rows, dtype=bool)
        up[starts[has_up] + 1] = True
        c = client[s]
        t = tech[s]

        def normal(r: np.random.Generator, k: int) -> np.ndarray:
            return r.standard_normal(k)

        time_s = sec[s] + np.where(up, 10.5 + 1.5 * draw(row_sizes, uniform), 0.0)
        day_us = (day.toordinal() - _EPOCH_DAY) * 86_400_000_000
        time_us = day_us + np.round(time_s * 1e6).astype(np.int64)

        line = np.where(up, pop.line_up[c], pop.line_down[c])
        noise = np.exp(self._tech_test_sigma[t] * draw(row_sizes, normal))
        mbps = np.round(np.clip(line * noise * drop[s], 0.05, 10000.0), 6)
        rtt = rtt_session[s] * np.exp(self._tech_rtt_sigma[t] * draw(row_sizes, normal))
        rtt = np.round(np.maximum(rtt, 0.3), 3)
        loss = self._tech_loss[t] * np.exp(draw(row_sizes, normal)) * (1 + evening[s])
        zero = draw(row_sizes, uniform) < self._tech_loss_zero[t]
        loss = np.where(up | zero, 0.0, np.round(np.minimum(loss, 0.25), 8))

        # Id counters, each segment on its own (the last hour counts on from 2**30 above
        # the day's base, past anything the earlier hours reach).
        pod_rows = pod[s]
        bounds = np.cumsum([0, *row_sizes])
        counter = np.concatenate(
            [
                self._counters(r, day, pod_rows[a:b], a_hour == 23)
                for r, (_, a_hour, _), a, b in zip(
                    rngs, segments, bounds[:-1], bounds[1:], strict=True
                )
            ]
        )
        # The archive delay (a truncated exponential, at most an hour) carries some rows
        # of the last hour past midnight, into the next day's partition.
        last = rows - row_sizes[-1]
        cut = 1.0 - math.exp(-_ARCHIVE_DELAY_MAX_S / _ARCHIVE_DELAY_MEAN_S)
        delay = -_ARCHIVE_DELAY_MEAN_S * np.log1p(-cut * rngs[-1].random(row_sizes[-1]))
        spill = np.zeros(rows, dtype=bool)
        spill[last:] = time_s[last:] + delay >= 86_400.0
        dup = draw(row_sizes, uniform) < DUPLICATE_SHARE
        return _Part(
            day=day,
            time_us=time_us,
            up=up,
            mbps=mbps,
            rtt=rtt,
            loss=loss,
            client=c,
            site=site[s],
            pod=pod_rows,
            counter=counter,
            iid=iid[s],
            no_coords=no_coords[s],
            geo_null=geo_null[s],
            net_null=net_null[s],
            spill=spill,
            dup=dup,
        )

    def _interface_ids(self, client: np.ndarray, device: np.ndarray, day: dt.date) -> np.ndarray:
        """A device's privacy address of the day (its lower 64 bits): a hash, so it is
        the same in any range. Each group's first hex digit is made non-zero (as 15 in
        16 are anyway), so the text is four digits a group and never needs "::"."""
        iid = _mix64(
            _mix64(client.astype(np.uint64) ^ np.uint64(self.seed % (1 << 64)))
            ^ np.uint64((_IID_STREAM << 32) + day.toordinal())
            ^ (device << np.uint64(56))
        )
        for shift in (60, 44, 28, 12):
            top = (iid >> np.uint64(shift)) & np.uint64(0xF)
            spare = np.uint64(1) + (iid >> np.uint64(shift - 4)) % np.uint64(15)
            iid |= np.where(top == 0, spare, np.uint64(0)) << np.uint64(shift)
        return iid

    def _spilled(self, day: dt.date, part: _Part | None = None) -> _Part | None:
        """The rows tested on `day` but archived the next day. Kept for a while: the
        next archive date of a range needs them, and they are few."""

        def make() -> _Part | None:
            whole = self._test_day(day, last_hour_only=True) if part is None else part
            return None if whole is None else whole.subset(np.flatnonzero(whole.spill))

        return _cached(self._spill_cache, ("spilled", day), make, size=4)

    def _lags(self, part: _Part, rows: np.ndarray, copies: bool) -> np.ndarray:
        """Days from archive to arrival of these rows of `part` (or of their copies):
        a hash of the row (its pod and counter are unique in its test day), so it
        neither depends on nor changes anything else."""
        key = np.uint64(((self.seed % (1 << 32)) << 32) ^ (part.day.toordinal() << 1) ^ copies)
        row = part.counter[rows] ^ (part.pod[rows].astype(np.uint64) << np.uint64(56))
        u = (_mix64(_mix64(row) ^ key) >> np.uint64(11)) * (1.0 / (1 << 53))
        return (1 + np.searchsorted(_LAG_CDF[:-1], u, side="right")).astype(np.int8)

    def _archive(self, day: dt.date) -> list[_Piece]:
        """The rows archived on `day` (that arrived by `as_of`, when set): those tested
        on the day before that spilled over, then the day's own but those that spill."""
        if self.as_of is not None and self.as_of < day + dt.timedelta(days=1):
            return []  # nothing of `day` has arrived yet
        pieces: list[tuple[_Part, np.ndarray]] = []
        previous = self._spilled(day - dt.timedelta(days=1))
        if previous is not None:
            pieces.append((previous, np.arange(len(previous.up))))
        current = self._test_day(day)
        if current is not None:
            self._spilled(day, current)
            pieces.append((current, np.flatnonzero(~current.spill)))

        # Each piece's rows, a duplicated row twice in a row; then what has arrived.
        seen = None
        if self.as_of is not None and day + dt.timedelta(days=_MAX_LAG_DAYS) > self.as_of:
            seen = (self.as_of - day).days
        chosen: list[_Piece] = []
        for part, keep in pieces:
            twice = part.dup[keep]
            index = np.repeat(keep, 1 + twice.astype(np.int64))
            if seen is not None:
                arrives = self._lags(part, index, copies=False)
                second = np.cumsum(1 + twice.astype(np.int64)) - 1  # the copy of a pair
                arrives[second[twice]] = self._lags(part, keep[twice], copies=True)
                index = index[arrives <= seen]
            if len(index):
                chosen.append(_Piece(day, part, index))
        return chosen

    def _pods(self, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        """Per pod: the id prefix `ndt-<pod>_<start epoch>_` (uint8 matrix) and the
        counter's base for `day`."""
        return _cached(self._day_cache, ("pods", day), lambda: self._compute_pods(day))

    def _compute_pods(self, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        period = day.toordinal() // _BOOT_PERIOD_DAYS
        period_start = period * _BOOT_PERIOD_DAYS - _EPOCH_DAY
        day_in_period = day.toordinal() - period * _BOOT_PERIOD_DAYS
        prefixes = []
        bases = []
        for site in self.sites:
            for m in range(1, site.machines + 1):
                h = _stable_hash(f"{site.code}-mlab{m}-{period}")
                name = "".join(_POD_ALPHABET[(h >> (6 * i)) % len(_POD_ALPHABET)] for i in range(5))
                epoch = period_start * 86400 - 3600 - (h >> 32) % 72000
                prefixes.append(f"ndt-{name}_{epoch:010d}_".encode())
                day_h = _stable_hash(f"{site.code}-mlab{m}-{day.toordinal()}")
                bases.append((day_in_period << 32) + (day_h % (1 << 28)))
        matrix = np.frombuffer(b"".join(prefixes), dtype=np.uint8).reshape(-1, _ID_PREFIX_LEN)
        return matrix, np.array(bases, dtype=np.uint64)

    def _counters(
        self, rng: np.random.Generator, day: dt.date, pod: np.ndarray, last_hour: bool
    ) -> np.ndarray:
        """Each row's id counter, increasing through the day on each pod."""
        _, bases = self._pods(day)
        rows = len(pod)
        if not rows:
            return np.zeros(0, dtype=np.uint64)
        order = np.argsort(pod, kind="stable")
        gaps = rng.integers(1, 48, rows).astype(np.uint64)
        sorted_pod = pod[order]
        csum = np.cumsum(gaps)
        first = np.flatnonzero(np.r_[True, sorted_pod[1:] != sorted_pod[:-1]])
        group_start = np.repeat(csum[first] - gaps[first], np.diff(np.r_[first, rows]))
        counter = np.empty(rows, dtype=np.uint64)
        counter[order] = bases[sorted_pod] + (csum - group_start)
        if last_hour:
            counter += np.uint64(1 << 30)
        return counter

    def _assemble(self, chosen: list[_Piece]) -> pa.RecordBatch:
        """One batch of the rows of `chosen`, in order (several archive dates at once
        when days are small: the cost of a batch is much per call, little per row)."""
        pop = self.population

        def gather(name: str) -> np.ndarray:
            arrays = [getattr(part, name)[index] for _, part, index in chosen]
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

        client = gather("client")
        up = gather("up")
        place = pop.place[client]
        site = gather("site")
        no_coords = gather("no_coords")

        # ids: each row's prefix is its test day's (pods change name every 28 days).
        tables: dict[dt.date, int] = {}
        for _, part, _ in chosen:
            tables.setdefault(part.day, len(tables))
        prefixes = np.concatenate([self._pods(d)[0] for d in tables])
        n_pods = int(self._machines.sum())
        pod = np.concatenate(
            [part.pod[index] + tables[part.day] * n_pods for _, part, index in chosen]
        )
        ids = _id_strings(prefixes, pod, gather("counter"))

        a_type = UNIFIED.field("a").type
        client_type = UNIFIED.field("client").type
        geo_type = client_type.field("Geo").type
        net_type = client_type.field("Network").type
        server_type = UNIFIED.field("server").type

        date = pa.array(
            np.repeat(
                np.array([day.toordinal() - _EPOCH_DAY for day, _, _ in chosen], dtype=np.int32),
                [len(index) for _, _, index in chosen],
            ),
            pa.date32(),
        )
        a = pa.StructArray.from_arrays(
            [
                ids,
                pa.array(gather("time_us"), pa.timestamp("us", tz="UTC")),
                self._directions.take(pa.array(up.astype(np.int8))),
                pa.array(gather("mbps"), pa.float64()),
                pa.array(gather("rtt"), pa.float64()),
                pa.array(gather("loss"), pa.float64(), mask=up),  # null: as the views give it
            ],
            fields=list(a_type),
        )

        place_idx = pa.array(place)
        located_idx = pa.array(place, mask=no_coords)
        city_idx = pa.array(place, mask=no_coords | (pop.location[client] == Location.STATE))
        geo = pa.StructArray.from_arrays(
            [
                self._place_continents.take(place_idx),
                self._place_countries.take(place_idx),
                self._place_subdivisions.take(located_idx),
                self._place_names.take(city_idx),
                pa.array(pop.lat[client], pa.float64(), mask=no_coords),
                pa.array(pop.lon[client], pa.float64(), mask=no_coords),
                pa.array(
                    pop.accuracy_km[client],
                    pa.int64(),
                    mask=no_coords | ~pop.has_radius[client],
                ),
            ],
            fields=list(geo_type),
            mask=pa.array(gather("geo_null")),
        )
        as_idx = pop.mlab_as[client]
        network = pa.StructArray.from_arrays(
            [
                pa.array(self._as_numbers[as_idx], pa.int64()),
                self._as_names.take(pa.array(as_idx)),
            ],
            fields=list(net_type),
            mask=pa.array(gather("net_null")),
        )
        # IPv4 rows take the client's address; IPv6 rows get the day's privacy address.
        ip = self._addresses(client, gather("iid"))
        client_struct = pa.StructArray.from_arrays([ip, geo, network], fields=list(client_type))
        server = pa.StructArray.from_arrays(
            [self._site_codes.take(pa.array(site))], fields=list(server_type)
        )
        return pa.RecordBatch.from_arrays([ids, date, a, client_struct, server], schema=UNIFIED)

    # -- the Source protocol --------------------------------------------------------

    def day_batch(self, day: dt.date) -> pa.RecordBatch:
        """All rows archived on `day` (`date` = day), as one batch (possibly empty)."""
        pieces = self._archive(day)
        if not pieces:
            return pa.RecordBatch.from_pylist([], schema=UNIFIED)
        return self._assemble(pieces)

    def batches(self, start: dt.date, end: dt.date) -> Iterator[pa.RecordBatch]:
        """Rows archived `start` through `end` (inclusive), in date order, in batches of
        `batch_size` rows (the last may be shorter)."""
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        # Rows chosen but not yet built: days are built together once a batch's worth.
        chosen: list[_Piece] = []
        chosen_rows = 0
        day = start
        while day <= end:
            pieces = self._archive(day)
            day += dt.timedelta(days=1)
            chosen += pieces
            chosen_rows += sum(len(p.index) for p in pieces)
            if pending_rows + chosen_rows < self.batch_size:
                continue
            pending.append(self._assemble(chosen))
            pending_rows += chosen_rows
            chosen, chosen_rows = [], 0
            while pending_rows >= self.batch_size:
                out, pending = _take_rows(pending, self.batch_size)
                pending_rows -= self.batch_size
                yield out
        if chosen:
            pending.append(self._assemble(chosen))
            pending_rows += chosen_rows
        if pending_rows:
            out, pending = _take_rows(pending, pending_rows)
            yield out


def _cached(cache: dict, key: tuple[str, dt.date], make: Callable[[], _T], size: int = 128) -> _T:
    """`make()`, kept in `cache` under `key`; the oldest half goes once it holds `size`
    entries, so a long range holds no more than a short one."""
    try:
        return cache[key]
    except KeyError:
        pass
    value = make()
    if len(cache) >= size:
        for old in list(cache)[: size // 2]:
            cache.pop(old, None)
    cache[key] = value
    return value


def _ipv6_head_strings(hi: np.ndarray) -> pa.StringArray:
    """The four groups of each /64 (upper halves `hi`), uncompressed: "2601:600:1:0"."""
    if not len(hi):
        return pa.array([], pa.string())
    table = _hextet_strings()
    words = [(hi >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF) for k in range(4)]
    return pc.binary_join_element_wise(*(table.take(pa.array(w)) for w in words), ":")


def _ipv6_network_strings(hi: np.ndarray, heads: pa.StringArray) -> pa.StringArray:
    """RFC 5952 text of the /64 networks ("2601:600:1::/64"), as `piecewise.ingest.clients`
    keys them: the zero lower half is the longest run of zeros, so "::" goes there,
    taking along the zero groups that end the upper half (redone the long way)."""
    text = pc.binary_join_element_wise(heads, pa.scalar("::/64"), "")
    redo = (hi & np.uint64(0xFFFF)) == 0
    if redo.any():
        fixed = [str(ipaddress.IPv6Network((int(h) << 64, 64))) for h in hi[redo]]
        text = pc.replace_with_mask(text, pa.array(redo), pa.array(fixed, pa.string()))
    return text


def _check_as_of(as_of: dt.date | None) -> dt.date | None:
    # A datetime is a date too; refuse it rather than drop its time of day silently.
    if as_of is not None and (isinstance(as_of, dt.datetime) or not isinstance(as_of, dt.date)):
        raise ValueError("as_of must be a date (datetime.date) or None")
    return as_of


def _offset(
    lat: np.ndarray | float, lon: np.ndarray | float, dist_km: np.ndarray, bearing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The points `dist_km` away from (`lat`, `lon`) towards `bearing` (radians)."""
    dlat = dist_km * np.cos(bearing) / 111.32
    dlon = dist_km * np.sin(bearing) / (111.32 * np.cos(np.radians(lat)))
    return lat + dlat, lon + dlon


def _id_strings(prefixes: np.ndarray, pod: np.ndarray, counter: np.ndarray) -> pa.StringArray:
    """ndt7-shaped ids: each row's pod prefix, then its counter in 16 upper-case hex digits."""
    rows = len(pod)
    data = np.empty((rows, _ID_LEN), dtype=np.uint8)
    data[:, :_ID_PREFIX_LEN] = np.take(prefixes, pod, axis=0)
    digits = _HEX_PAIRS_UPPER[counter.astype(">u8").view(np.uint8)]  # two per byte
    data[:, _ID_PREFIX_LEN:] = digits.view(np.uint8).reshape(rows, 16)
    return _fixed_width_strings(data)


def _take_rows(
    pending: list[pa.RecordBatch], count: int
) -> tuple[pa.RecordBatch, list[pa.RecordBatch]]:
    """The first `count` rows of `pending` as one batch, and what is left."""
    parts: list[pa.RecordBatch] = []
    need = count
    rest = list(pending)
    while need:
        head = rest[0]
        if head.num_rows <= need:
            parts.append(head)
            need -= head.num_rows
            rest.pop(0)
        else:
            parts.append(head.slice(0, need))
            rest[0] = head.slice(need)
            need = 0
    out = parts[0] if len(parts) == 1 else pa.concat_batches(parts)
    return out, rest
