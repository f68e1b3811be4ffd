"""The demo's Internet service providers: who serves Washington State, on which
autonomous systems and address blocks, with which access technology and plans.

The table drives both the demo GeoLite2-ASN database (`piecewise.demo.geoip`) and the
synthetic test source (`piecewise.demo.synthetic`), so the address a synthetic test
comes from resolves, in the demo database, to an AS of the provider that carried it.

The providers, AS numbers and organisation spellings follow the real ones as MaxMind's
GeoLite2-ASN (`autonomous_system_organization`) and M-Lab (`client.Network.ASName`, from
ipinfo) tend to show them; the prefixes are plausible blocks of the right registries,
market shares, plans and the numbers of the smallest providers are illustrative. None of
it is authoritative: it is demo data, never to be used to look up a real address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "DEMO_ISPS",
    "AutonomousSystem",
    "DemoIsp",
    "PlanTier",
    "Technology",
    "demo_isp",
]


class Technology(StrEnum):
    """Access technology; the synthetic source's performance model is keyed by it."""

    FIBER = "fiber"
    CABLE = "cable"
    DSL = "dsl"
    FIXED_WIRELESS = "fixed_wireless"
    LEO_SATELLITE = "leo_satellite"
    MOBILE = "mobile"  # 4G/5G "home internet" over a mobile network
    CAMPUS = "campus"  # a university or enterprise network


@dataclass(frozen=True)
class PlanTier:
    """One advertised plan: speeds in Mbps and its share of the provider's subscribers.

    `technology` overrides the provider's when one provider sells several (Lumen's DSL
    and Quantum Fiber, Ziply's remaining copper)."""

    name: str
    down_mbps: float
    up_mbps: float
    share: float
    technology: Technology | None = None

    def __post_init__(self) -> None:
        if self.down_mbps <= 0 or self.up_mbps <= 0:
            raise ValueError(f"plan {self.name!r}: speeds must be positive")
        if self.share <= 0:
            raise ValueError(f"plan {self.name!r}: share must be positive")


@dataclass(frozen=True)
class AutonomousSystem:
    """An AS and the blocks it originates.

    `maxmind_org` is what GeoLite2-ASN's `autonomous_system_organization` says;
    `mlab_name` what M-Lab's `client.Network.ASName` says (its names come from ipinfo,
    so the two legitimately differ)."""

    number: int
    maxmind_org: str
    mlab_name: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for cidr in self.ipv4:
            if ipaddress.ip_network(cidr).version != 4:
                raise ValueError(f"AS{self.number}: {cidr} is not an IPv4 network")
        for cidr in self.ipv6:
            net = ipaddress.ip_network(cidr)
            if net.version != 6:
                raise ValueError(f"AS{self.number}: {cidr} is not an IPv6 network")
            if net.prefixlen > 48:
                raise ValueError(f"AS{self.number}: {cidr}: IPv6 blocks must be /48 or wider")


@dataclass(frozen=True)
class DemoIsp:
    """A provider as the demo models it.

    `systems[0]` is the provider's main AS. M-Lab's AS number comes from RouteViews, so
    for `mlab_sibling_rate` of a provider's clients the synthetic source reports a
    sibling AS of the same provider (another entry of `systems`) instead of the one the
    demo database gives for the address.

    `market_share` is relative (the table is normalised where it is used).
    `service_bbox` (west, south, east, north) limits where the provider has customers;
    None means statewide. `rural_affinity` > 0 favours small places (satellite, fixed
    wireless), < 0 large ones (cable). `ipv6_share` is the share of its clients that
    test over IPv6."""

    key: str
    name: str
    technology: Technology
    market_share: float
    systems: tuple[AutonomousSystem, ...]
    tiers: tuple[PlanTier, ...]
    ipv6_share: float = 0.0
    service_bbox: tuple[float, float, float, float] | None = None
    rural_affinity: float = 0.0
    mlab_sibling_rate: float = 0.0
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.systems:
            raise ValueError(f"{self.key}: at least one autonomous system is needed")
        if not self.tiers:
            raise ValueError(f"{self.key}: at least one plan tier is needed")
        if not self.ipv4_prefixes():
            raise ValueError(f"{self.key}: at least one IPv4 prefix is needed")
        if self.ipv6_share > 0 and not self.ipv6_prefixes():
            raise ValueError(f"{self.key}: ipv6_share > 0 needs an IPv6 prefix")
        if not 0 <= self.ipv6_share <= 1 or not 0 <= self.mlab_sibling_rate <= 1:
            raise ValueError(f"{self.key}: shares must be within [0, 1]")
        if self.market_share <= 0:
            raise ValueError(f"{self.key}: market_share must be positive")

    @property
    def asns(self) -> tuple[int, ...]:
        return tuple(s.number for s in self.systems)

    def ipv4_prefixes(self) -> list[tuple[str, AutonomousSystem]]:
        return [(cidr, s) for s in self.systems for cidr in s.ipv4]

    def ipv6_prefixes(self) -> list[tuple[str, AutonomousSystem]]:
        return [(cidr, s) for s in self.systems for cidr in s.ipv6]

    def tier_technology(self, tier: PlanTier) -> Technology:
        return tier.technology or self.technology


T = Technology

_PUGET_SOUND = (-123.3, 46.75, -121.7, 48.15)
_SEATTLE = (-122.45, 47.48, -122.22, 47.74)
_PULLMAN = (-117.3, 46.65, -117.05, 46.8)
_ISLAND_COUNTY = (-122.8, 47.9, -122.3, 48.45)
_EASTERN_WA = (-120.0, 45.9, -116.9, 49.0)
_SOUTH_CENTRAL_WA = (-121.0, 45.5, -117.5, 46.9)

DEMO_ISPS: tuple[DemoIsp, ...] = (
    DemoIsp(
        key="comcast",
        name="Comcast (Xfinity)",
        technology=T.CABLE,
        market_share=0.34,
        systems=(
            AutonomousSystem(
                7922,
                "COMCAST-7922",
                "Comcast Cable Communications, LLC",
                ipv4=(
                    "73.11.0.0/16",
                    "73.42.0.0/15",
                    "73.97.0.0/16",
                    "73.109.0.0/16",
                    "73.140.0.0/16",
                    "24.16.0.0/14",
                    "67.183.0.0/16",
                    "76.104.0.0/14",
                    "98.203.0.0/16",
                ),
                ipv6=("2601:600::/23",),
            ),
            AutonomousSystem(33650, "COMCAST-33650", "Comcast Cable Communications, LLC"),
        ),
        tiers=(
            PlanTier("Connect", 150, 10, 0.14),
            PlanTier("Connect More", 300, 10, 0.28),
            PlanTier("Fast", 500, 20, 0.25),
            PlanTier("Superfast", 800, 20, 0.15),
            PlanTier("Gigabit", 1000, 35, 0.13),
            PlanTier("Gigabit x2", 2000, 200, 0.05),
        ),
        ipv6_share=0.45,
        rural_affinity=-0.15,
        mlab_sibling_rate=0.1,
    ),
    DemoIsp(
        key="lumen",
        name="Lumen (CenturyLink / Quantum Fiber)",
        technology=T.DSL,
        market_share=0.12,
        systems=(
            AutonomousSystem(
                209,
                "CENTURYLINK-US-LEGACY-QWEST",
                "CenturyLink Communications, LLC",
                ipv4=(
                    "71.212.0.0/14",
                    "97.113.0.0/16",
                    "97.126.0.0/16",
                    "174.21.0.0/16",
                    "174.61.0.0/16",
                ),
                ipv6=("2602::/24",),
            ),
            AutonomousSystem(3356, "LEVEL3", "Level 3 Parent, LLC"),
        ),
        tiers=(
            PlanTier("Simply Unlimited 10", 10, 1, 0.12),
            PlanTier("Simply Unlimited 40", 40, 5, 0.2),
            PlanTier("Simply Unlimited 100", 100, 10, 0.16),
            PlanTier("Quantum Fiber 500", 500, 500, 0.3, T.FIBER),
            PlanTier("Quantum Fiber 940", 940, 940, 0.22, T.FIBER),
        ),
        ipv6_share=0.1,
        mlab_sibling_rate=0.03,
    ),
    DemoIsp(
        key="ziply",
        name="Ziply Fiber",
        technology=T.FIBER,
        market_share=0.11,
        systems=(
            AutonomousSystem(
                20055,
                "WHOLESAIL-NETWORKS",
                "Wholesail Networks LLC",
                ipv4=("50.46.0.0/15", "50.53.0.0/16", "50.54.0.0/16", "50.35.0.0/16"),
                ipv6=("2604:4e40::/32",),
            ),
        ),
        tiers=(
            PlanTier("Copper 25", 25, 3, 0.1, T.DSL),
            PlanTier("Fiber 100", 100, 100, 0.17),
            PlanTier("Fiber 300", 300, 300, 0.25),
            PlanTier("Fiber Gig", 1000, 1000, 0.36),
            PlanTier("Fiber 2 Gig", 2000, 2000, 0.08),
            PlanTier("Fiber 5 Gig", 5000, 5000, 0.04),
        ),
        ipv6_share=0.3,
    ),
    DemoIsp(
        key="astound",
        name="Astound Broadband (Wave)",
        technology=T.CABLE,
        market_share=0.05,
        systems=(
            AutonomousSystem(
                11404,
                "AS-VOBIZ",
                "vanoppen.biz LLC",
                ipv4=("24.113.0.0/16", "174.127.128.0/17", "65.50.192.0/18", "98.158.0.0/19"),
                ipv6=("2604:4080::/32",),
            ),
        ),
        tiers=(
            PlanTier("300 Mbps", 300, 20, 0.3),
            PlanTier("600 Mbps", 600, 20, 0.3),
            PlanTier("1 Gig", 1000, 50, 0.3),
            PlanTier("1.5 Gig", 1500, 50, 0.1),
        ),
        ipv6_share=0.2,
        service_bbox=_PUGET_SOUND,
        rural_affinity=-0.1,
    ),
    DemoIsp(
        key="spectrum",
        name="Charter Spectrum",
        technology=T.CABLE,
        market_share=0.05,
        systems=(
            AutonomousSystem(
                20115,
                "CHARTER-20115",
                "Charter Communications",
                ipv4=("71.84.0.0/14", "96.41.0.0/16", "68.185.0.0/16"),
                ipv6=("2600:6c50::/28",),
            ),
        ),
        tiers=(
            PlanTier("Internet", 300, 10, 0.4),
            PlanTier("Internet Premier", 500, 20, 0.35),
            PlanTier("Internet Gig", 1000, 35, 0.25),
        ),
        ipv6_share=0.4,
        service_bbox=_SOUTH_CENTRAL_WA,
        rural_affinity=-0.1,
    ),
    DemoIsp(
        key="tmobile",
        name="T-Mobile Home Internet",
        technology=T.MOBILE,
        market_share=0.1,
        systems=(
            AutonomousSystem(
                21928,
                "T-MOBILE-AS21928",
                "T-Mobile USA, Inc.",
                ipv4=("172.56.0.0/14",),
                ipv6=("2607:fb90::/32",),
            ),
        ),
        tiers=(
            PlanTier("Home Internet", 245, 31, 0.6),
            PlanTier("Home Internet Plus", 415, 55, 0.4),
        ),
        ipv6_share=0.7,
        rural_affinity=0.1,
    ),
    DemoIsp(
        key="verizon",
        name="Verizon (5G / LTE Home)",
        technology=T.MOBILE,
        market_share=0.05,
        systems=(
            AutonomousSystem(
                6167,
                "CELLCO-PART",
                "Verizon Business",
                ipv4=("174.192.0.0/12", "97.160.0.0/12"),
                ipv6=("2600:1000::/28",),
            ),
            AutonomousSystem(701, "UUNET", "Verizon Business", ipv4=("71.160.0.0/14",)),
        ),
        tiers=(
            PlanTier("LTE Home", 50, 5, 0.15),
            PlanTier("5G Home", 250, 25, 0.6),
            PlanTier("5G Home Plus", 400, 40, 0.25),
        ),
        ipv6_share=0.5,
        mlab_sibling_rate=0.02,
    ),
    DemoIsp(
        key="starlink",
        name="Starlink",
        technology=T.LEO_SATELLITE,
        market_share=0.05,
        systems=(
            AutonomousSystem(
                14593,
                "SPACEX-STARLINK",
                "Space Exploration Technologies Corporation",
                ipv4=("98.97.0.0/16", "129.222.0.0/16", "143.105.0.0/16"),
                ipv6=("2605:59c8::/32",),
            ),
        ),
        tiers=(
            PlanTier("Residential", 200, 20, 0.8),
            PlanTier("Residential Lite", 100, 10, 0.2),
        ),
        ipv6_share=0.3,
        rural_affinity=0.6,
    ),
    DemoIsp(
        key="whidbey",
        name="Whidbey Telecom",
        technology=T.FIBER,
        market_share=0.01,
        systems=(
            AutonomousSystem(
                14675,
                "WHIDBEY-TELECOM",
                "Whidbey Telephone Company",
                ipv4=("64.146.128.0/19", "198.178.176.0/21"),
                ipv6=("2607:f2c8::/32",),
            ),
        ),
        tiers=(
            PlanTier("DSL 20", 20, 2, 0.15, T.DSL),
            PlanTier("Fiber 250", 250, 250, 0.45),
            PlanTier("Fiber Gig", 1000, 1000, 0.4),
        ),
        ipv6_share=0.05,
        service_bbox=_ISLAND_COUNTY,
        notes="Island County's local telephone company, now mostly fiber.",
    ),
    DemoIsp(
        key="ptera",
        name="Ptera",
        technology=T.FIXED_WIRELESS,
        market_share=0.02,
        systems=(
            AutonomousSystem(
                26899,
                "PTERA",
                "Ptera Inc",
                ipv4=("66.119.96.0/20", "216.186.32.0/20"),
                ipv6=("2604:9e00::/32",),
            ),
        ),
        tiers=(
            PlanTier("Wireless 25", 25, 5, 0.4),
            PlanTier("Wireless 50", 50, 10, 0.4),
            PlanTier("Fiber 300", 300, 300, 0.2, T.FIBER),
        ),
        ipv6_share=0.05,
        service_bbox=_EASTERN_WA,
        rural_affinity=0.4,
        notes="Spokane-area fixed-wireless provider with some fiber.",
    ),
    DemoIsp(
        key="uw",
        name="University of Washington",
        technology=T.CAMPUS,
        market_share=0.03,
        systems=(
            AutonomousSystem(
                73,
                "UW-AS",
                "University of Washington",
                ipv4=("128.95.0.0/16", "140.142.0.0/16", "205.175.96.0/19"),
                ipv6=("2607:4000::/32",),
            ),
        ),
        tiers=(PlanTier("Campus", 1000, 1000, 1.0),),
        ipv6_share=0.35,
        service_bbox=_SEATTLE,
    ),
    DemoIsp(
        key="wsu",
        name="Washington State University",
        technology=T.CAMPUS,
        market_share=0.01,
        systems=(
            AutonomousSystem(
                10430,
                "WSU",
                "Washington State University",
                ipv4=("134.121.0.0/16", "69.166.32.0/19"),
                ipv6=("2620:104:4000::/44",),
            ),
        ),
        tiers=(PlanTier("Campus", 1000, 1000, 1.0),),
        ipv6_share=0.2,
        service_bbox=_PULLMAN,
    ),
)


def demo_isp(key: str) -> DemoIsp:
    """The demo provider with this `key` (KeyError if none)."""
    for isp in DEMO_ISPS:
        if isp.key == key:
            return isp
    raise KeyError(key)
