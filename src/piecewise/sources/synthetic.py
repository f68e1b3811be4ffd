"""A synthetic source of NDT tests: realistic, deterministic, fast.

`SyntheticSource(seed=..., tests_per_day=...)` yields rows in exactly the unified schema
(`piecewise.schema.UNIFIED`), for any date range, with no network and no M-Lab account.
It powers the demo, the tests and the benchmarks.

Synthetic test data
===================

The synthetic source imitates what M-Lab's `ndt.unified_downloads` and
`ndt.unified_uploads` hold for one region. Its defaults model Washington State with the
demo's places (`piecewise/demo/wa_places.csv`, 90 cities and towns weighted by
population) and providers (`piecewise/demo/isps.py`: Comcast, Lumen, Ziply Fiber,
Astound, Spectrum, T-Mobile and Verizon home internet, Starlink, two small local
providers and two universities). None of it is measured data: it is a model meant to
exercise the pipeline with the shapes real data has.

**Determinism.** The same `seed` gives the same rows. Each date is generated from its
own random stream, seeded from `(seed, date)`, so a date's rows are identical whether it
is requested alone or inside a longer range. The client population depends only on the
seed and the settings (rate, places, providers), never on the dates asked for.

**Clients.** There are about `30 × tests_per_day` clients (households). Each has:

- a home place, drawn by place weight. GeoIP is city-level: three clients in four get
  the place's centre exactly, so many tests share coordinates; the rest are placed up to
  ~12 km away (a half-normal distance, ~4 km typical), with a smaller accuracy radius.
- a provider, drawn by market share among the providers that serve the place (some only
  serve a bounding box, e.g. Astound around Puget Sound, Whidbey Telecom on the island);
  satellite and fixed wireless weigh more in small places, cable in large ones.
- a plan tier of that provider (advertised download/upload, drawn by the tier shares);
  the tier fixes the access technology (Lumen sells DSL and fiber, for instance).
- one stable address inside the provider's blocks, IPv6 for the provider's IPv6 share
  of clients; the demo GeoLite2-ASN database maps it back to the provider's AS. M-Lab
  takes AS numbers from RouteViews, so for a few providers a share of clients is
  reported under a sibling AS (Comcast's AS33650 beside AS7922, say). Small blocks can
  give two clients one address, as carrier-grade NAT does.
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
hour is Poisson. `date` is the UTC date of `a.TestTime`, as in M-Lab's tables; a
session never straddles midnight UTC.

**Sessions and rows.** Each session is a download row and, for 93% of sessions, an
upload row starting 10.5–12 s later, on the same server. Each row has its own `id`
(equal to `a.UUID`, as in ndt7 data) shaped like ndt7's,
`ndt-<pod>_<server start epoch>_<16-hex-digit counter>`: the pod name and start epoch
change every 28 days per machine and the counter increases through the day.
`server.Site` is an M-Lab site (sea01–sea09, pdx01, yvr01, den02, lax03), drawn with a
weight falling off with distance from the client's place.

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
  for uploads always exactly 0.0, as ndt7 reports it.

**Annotations.** `client.Geo` has ContinentCode "NA", CountryCode "US",
Subdivision1ISOCode "WA" (no country prefix, as M-Lab stores it), City, Latitude,
Longitude (4 decimals) and AccuracyRadiusKm. About 2% of sessions have no
coordinates: in 40% of those the whole `client.Geo` is null, otherwise only the country
is known. About 1% of sessions have a null `client.Network`. Values are otherwise sane:
the pipeline's handling of absurd values is tested separately.

**Speed.** Everything is vectorised with numpy and Arrow; per-client strings (addresses,
names) are built once and gathered with `take`. About 1.3 M rows a second on a 2-core
machine (10 M rows in ~8 s).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.demo.isps import DEMO_ISPS, AutonomousSystem, DemoIsp, Technology
from piecewise.demo.places import Place, load_demo_places
from piecewise.schema import UNIFIED

__all__ = [
    "SITES",
    "TECH_PROFILES",
    "ClientPopulation",
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
_EXACT_CENTROID_SHARE = 0.75
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
_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)

# Stream tags keep the population's and the days' random streams apart.
_POPULATION_STREAM = 0x706F70
_DAY_STREAM = 0x646179


@dataclass(frozen=True)
class ClientPopulation:
    """The synthetic clients, one entry per client in each array (see the module doc).

    Ground truth for tests and demos: `isp` indexes `SyntheticSource.isps`, `tier` the
    ISP's `tiers`; `prefix_asn` is what the demo ASN database says for `ip`,
    `mlab_asn` what the rows report."""

    place: np.ndarray  # int32, index into places
    lon: np.ndarray  # reported longitude (float64)
    lat: np.ndarray
    accuracy_km: np.ndarray  # int64
    isp: np.ndarray  # int16
    tier: np.ndarray  # int16, index into the ISP's tiers
    technology: np.ndarray  # int8, index into `TECHNOLOGIES`
    is_ipv6: np.ndarray  # bool
    ip: pa.StringArray
    prefix_asn: np.ndarray  # int64
    mlab_as: np.ndarray  # int32, index into the flattened AS table
    mlab_asn: np.ndarray  # int64
    line_down: np.ndarray  # Mbps a test would show with no per-test noise or congestion
    line_up: np.ndarray
    rtt_ms: np.ndarray
    propensity: np.ndarray  # expected share of all sessions (sums to 1)

    def __len__(self) -> int:
        return len(self.place)


TECHNOLOGIES: tuple[Technology, ...] = tuple(Technology)


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


class SyntheticSource:
    """Synthetic NDT tests for a region (a `piecewise.sources.base.Source`).

    Keyword arguments: `seed`; `tests_per_day`, the mean number of sessions a day over
    the whole region (each gives a download and usually an upload row); `places`
    (default: the demo's Washington places); `isps` (default: the demo table);
    `batch_size`, rows per batch. Tuning: `clients_per_daily_test` (population size
    per daily session), `null_geo_fraction` (sessions without coordinates),
    `null_network_fraction`, `timezone` (local time for the diurnal and weekly cycle),
    `sites` (M-Lab servers)."""

    def __init__(
        self,
        *,
        seed: int,
        tests_per_day: float,
        places: Sequence[Place] | None = None,
        isps: Sequence[DemoIsp] | None = None,
        batch_size: int = 65536,
        clients_per_daily_test: float = 30.0,
        null_geo_fraction: float = 0.02,
        null_network_fraction: float = 0.01,
        timezone: str = "America/Los_Angeles",
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
        self._directions = pa.array(["download", "upload"], pa.string())
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

    def _build_population(self) -> ClientPopulation:
        rng = _rng(self.seed, _POPULATION_STREAM)
        n = self.n_clients
        places, isps = self.places, self.isps

        # Home place and reported coordinates.
        weights = np.array([p.weight for p in places], dtype=np.float64)
        place = np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(n), side="right")
        place = np.minimum(place, len(places) - 1).astype(np.int32)
        plat = np.array([p.lat for p in places])[place]
        plon = np.array([p.lon for p in places])[place]
        exact = rng.random(n) < _EXACT_CENTROID_SHARE
        dist_km = np.minimum(np.abs(rng.normal(0.0, 4.0, n)), 12.0)
        bearing = rng.uniform(0, 2 * np.pi, n)
        dlat = dist_km * np.cos(bearing) / 111.32
        dlon = dist_km * np.sin(bearing) / (111.32 * np.cos(np.radians(plat)))
        lat = np.where(exact, plat, np.round(plat + dlat, 4))
        lon = np.where(exact, plon, np.round(plon + dlon, 4))
        acc_exact = rng.choice([5, 10, 20, 50, 100], n, p=[0.05, 0.2, 0.35, 0.25, 0.15])
        acc_near = rng.choice([1, 5, 10, 20], n, p=[0.2, 0.4, 0.3, 0.1])
        accuracy = np.where(exact, acc_exact, acc_near).astype(np.int64)

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

        # Address, AS as the database has it, AS as M-Lab reports it.
        ipv6_share = np.array([p.ipv6_share for p in isps])
        is_ipv6 = rng.random(n) < ipv6_share[isp]
        prefix_sys = np.zeros(n, dtype=np.int32)
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
                text = self._addresses(rng, [c for c, _ in prefixes], k, v6)
                pieces_idx.append(sel)
                pieces_txt.append(text)
        order = np.argsort(np.concatenate(pieces_idx), kind="stable")
        ip = pa.concat_arrays(pieces_txt).take(pa.array(order))

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
            lon=lon,
            lat=lat,
            accuracy_km=accuracy,
            isp=isp,
            tier=tier,
            technology=tech,
            is_ipv6=is_ipv6,
            ip=ip,
            prefix_asn=self._as_numbers[prefix_sys],
            mlab_as=mlab_sys,
            mlab_asn=self._as_numbers[mlab_sys],
            line_down=line_down,
            line_up=line_up,
            rtt_ms=rtt,
            propensity=propensity,
        )

    @staticmethod
    def _addresses(
        rng: np.random.Generator, cidrs: list[str], which: np.ndarray, v6: bool
    ) -> pa.StringArray:
        nets = [ipaddress.ip_network(c) for c in cidrs]
        m = len(which)
        if not v6:
            base = np.array([int(net.network_address) for net in nets], dtype=np.int64)[which]
            size = np.array([net.num_addresses for net in nets], dtype=np.int64)[which]
            addr = base + (rng.random(m) * size).astype(np.int64)
            addr = (addr & ~0xFF) | (1 + (addr & 0xFF) % 254)  # no .0 or .255
            return _ipv4_strings(addr)
        full = (1 << 64) - 1
        net_hi = np.array([int(net.network_address) >> 64 for net in nets], dtype=np.uint64)
        fixed = np.array(
            [full ^ ((1 << (64 - net.prefixlen)) - 1) for net in nets], dtype=np.uint64
        )
        rand_hi = rng.integers(0, full, m, dtype=np.uint64, endpoint=True)
        hi = (net_hi[which] & fixed[which]) | (rand_hi & ~fixed[which])
        lo = rng.integers(1, full, m, dtype=np.uint64, endpoint=True)
        return _ipv6_strings(hi, lo)

    # -- days -------------------------------------------------------------------------

    def _hour_rates(self, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        """Expected sessions in each UTC hour of `day`, and each hour's UTC offset (h)."""
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
        """Mean number of sessions dated `day` (UTC)."""
        return float(self._hour_rates(day)[0].sum())

    def _day(self, day: dt.date) -> pa.RecordBatch | None:
        rng = _rng(self.seed, _DAY_STREAM, day.toordinal())
        rates, offsets = self._hour_rates(day)
        counts = rng.poisson(rates)
        n = int(counts.sum())
        if n == 0:
            return None
        pop = self.population

        # Session start times: uniform within each UTC hour, sorted.
        hour = np.repeat(np.arange(24), counts)
        span = np.where(hour == 23, 3600.0 - _END_OF_DAY_MARGIN_S, 3600.0)
        sec = np.sort(hour * 3600.0 + rng.random(n) * span)
        hour = (sec // 3600).astype(np.int64)
        local_h = (sec / 3600.0 + offsets[hour]) % 24.0
        dh = np.abs(local_h - _EVENING_PEAK_HOUR)
        dh = np.minimum(dh, 24.0 - dh)
        evening = np.exp(-0.5 * (dh / 1.5) ** 2)

        # Sessions: who, where to, what went missing.
        # (Sorted keys make the search cache-friendly; the permutation undoes the order.)
        cum = self._cum_propensity
        keys = np.sort(rng.random(n)) * cum[-1]
        client = np.minimum(np.searchsorted(cum, keys, side="right"), len(pop) - 1)
        client = client[rng.permutation(n)]
        place = pop.place[client]
        site = _pick(self._site_cdf, place, rng.random(n))
        machine = (rng.random(n) * self._machines[site]).astype(np.int64)
        pod = self._pod_offset[site] + machine
        has_up = rng.random(n) < _UPLOAD_SHARE
        u_geo = rng.random(n)
        no_coords = u_geo < self.null_geo_fraction
        geo_null = u_geo < self.null_geo_fraction * _GEO_STRUCT_NULL_SHARE
        net_null = rng.random(n) < self.null_network_fraction
        tech = pop.technology[client]
        drop = 1.0 - self._tech_evening[tech] * evening
        rtt_session = pop.rtt_ms[client] * (1.0 + 0.5 * self._tech_evening[tech] * evening)
        rtt_session += self._site_rtt_ms[place, site]

        # Rows: download, then (usually) upload.
        reps = 1 + has_up.astype(np.int64)
        starts = np.cumsum(reps) - reps
        rows = int(reps.sum())
        s = np.repeat(np.arange(n), reps)
        up = np.zeros(rows, dtype=bool)
        up[starts[has_up] + 1] = True
        c = client[s]
        t = tech[s]

        time_s = sec[s] + np.where(up, 10.5 + 1.5 * rng.random(rows), 0.0)
        day_us = (day.toordinal() - _EPOCH_DAY) * 86_400_000_000
        time_us = day_us + np.round(time_s * 1e6).astype(np.int64)

        line = np.where(up, pop.line_up[c], pop.line_down[c])
        noise = np.exp(self._tech_test_sigma[t] * rng.standard_normal(rows))
        mbps = np.round(np.clip(line * noise * drop[s], 0.05, 10000.0), 6)
        rtt = rtt_session[s] * np.exp(self._tech_rtt_sigma[t] * rng.standard_normal(rows))
        rtt = np.round(np.maximum(rtt, 0.3), 3)
        loss = self._tech_loss[t] * np.exp(rng.standard_normal(rows)) * (1 + evening[s])
        zero = rng.random(rows) < self._tech_loss_zero[t]
        loss = np.where(up | zero, 0.0, np.round(np.minimum(loss, 0.25), 8))

        ids = self._ids(rng, day, pod[s])
        return self._assemble(
            day=day,
            rows=rows,
            ids=ids,
            time_us=time_us,
            up=up,
            mbps=mbps,
            rtt=rtt,
            loss=loss,
            client=c,
            place=place[s],
            site=site[s],
            no_coords=no_coords[s],
            geo_null=geo_null[s],
            net_null=net_null[s],
        )

    def _pods(self, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        """Per pod: the id prefix `ndt-<pod>_<start epoch>_` (uint8 matrix) and the
        counter's base for `day`."""
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

    def _ids(self, rng: np.random.Generator, day: dt.date, pod: np.ndarray) -> pa.StringArray:
        prefixes, bases = self._pods(day)
        rows = len(pod)
        order = np.argsort(pod, kind="stable")
        gaps = rng.integers(1, 48, rows).astype(np.uint64)
        sorted_pod = pod[order]
        csum = np.cumsum(gaps)
        first = np.flatnonzero(np.r_[True, sorted_pod[1:] != sorted_pod[:-1]])
        group_start = np.repeat(csum[first] - gaps[first], np.diff(np.r_[first, rows]))
        counter = np.empty(rows, dtype=np.uint64)
        counter[order] = bases[sorted_pod] + (csum - group_start)
        data = np.empty((rows, _ID_LEN), dtype=np.uint8)
        data[:, :_ID_PREFIX_LEN] = prefixes[pod]
        for k in range(16):
            nibble = (counter >> np.uint64(60 - 4 * k)) & np.uint64(0xF)
            data[:, _ID_PREFIX_LEN + k] = _HEX_UPPER[nibble.astype(np.intp)]
        return _fixed_width_strings(data)

    def _assemble(
        self,
        *,
        day: dt.date,
        rows: int,
        ids: pa.StringArray,
        time_us: np.ndarray,
        up: np.ndarray,
        mbps: np.ndarray,
        rtt: np.ndarray,
        loss: np.ndarray,
        client: np.ndarray,
        place: np.ndarray,
        site: np.ndarray,
        no_coords: np.ndarray,
        geo_null: np.ndarray,
        net_null: np.ndarray,
    ) -> pa.RecordBatch:
        pop = self.population
        a_type = UNIFIED.field("a").type
        client_type = UNIFIED.field("client").type
        geo_type = client_type.field("Geo").type
        net_type = client_type.field("Network").type
        server_type = UNIFIED.field("server").type

        date = pa.array(np.full(rows, day.toordinal() - _EPOCH_DAY, dtype=np.int32), pa.date32())
        a = pa.StructArray.from_arrays(
            [
                ids,
                pa.array(time_us, pa.timestamp("us", tz="UTC")),
                self._directions.take(pa.array(up.astype(np.int8))),
                pa.array(mbps, pa.float64()),
                pa.array(rtt, pa.float64()),
                pa.array(loss, pa.float64()),
            ],
            fields=list(a_type),
        )

        place_idx = pa.array(place)
        located_idx = pa.array(place, mask=no_coords)
        geo = pa.StructArray.from_arrays(
            [
                self._place_continents.take(place_idx),
                self._place_countries.take(place_idx),
                self._place_subdivisions.take(located_idx),
                self._place_names.take(located_idx),
                pa.array(pop.lat[client], pa.float64(), mask=no_coords),
                pa.array(pop.lon[client], pa.float64(), mask=no_coords),
                pa.array(pop.accuracy_km[client], pa.int64(), mask=no_coords),
            ],
            fields=list(geo_type),
            mask=pa.array(geo_null),
        )
        as_idx = pop.mlab_as[client]
        network = pa.StructArray.from_arrays(
            [
                pa.array(self._as_numbers[as_idx], pa.int64()),
                self._as_names.take(pa.array(as_idx)),
            ],
            fields=list(net_type),
            mask=pa.array(net_null),
        )
        client_struct = pa.StructArray.from_arrays(
            [pop.ip.take(pa.array(client)), geo, network], fields=list(client_type)
        )
        server = pa.StructArray.from_arrays(
            [self._site_codes.take(pa.array(site))], fields=list(server_type)
        )
        return pa.RecordBatch.from_arrays([ids, date, a, client_struct, server], schema=UNIFIED)

    # -- the Source protocol --------------------------------------------------------

    def day_batch(self, day: dt.date) -> pa.RecordBatch:
        """All rows dated `day`, as one batch (possibly empty)."""
        batch = self._day(day)
        return pa.RecordBatch.from_pylist([], schema=UNIFIED) if batch is None else batch

    def batches(self, start: dt.date, end: dt.date) -> Iterator[pa.RecordBatch]:
        """Rows dated `start` through `end` (inclusive), in date order, in batches of
        `batch_size` rows (the last may be shorter)."""
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        day = start
        while day <= end:
            batch = self._day(day)
            day += dt.timedelta(days=1)
            if batch is None:
                continue
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= self.batch_size:
                out, pending = _take_rows(pending, self.batch_size)
                pending_rows -= self.batch_size
                yield out
        if pending_rows:
            out, pending = _take_rows(pending, pending_rows)
            yield out


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
