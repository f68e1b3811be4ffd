"""Demo data for Washington State: ISPs, a GeoLite2-ASN stand-in, places."""
