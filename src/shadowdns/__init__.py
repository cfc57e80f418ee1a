"""shadowdns: a predictive, geo-aware authoritative DNS server."""

__version__ = "0.1.0"
