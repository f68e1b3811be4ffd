"""Demo data for Washington State: providers, a GeoLite2-ASN stand-in, places.

`infra/demo/build_boundaries.mjs` builds the matching county and state boundaries.
"""

from piecewise.demo.geoip import build_demo_asn_db
from piecewise.demo.isps import DEMO_ISPS, DemoIsp
from piecewise.demo.places import Place, load_demo_places

__all__ = ["DEMO_ISPS", "DemoIsp", "Place", "build_demo_asn_db", "load_demo_places"]
