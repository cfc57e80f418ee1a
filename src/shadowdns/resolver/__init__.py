"""The DNS server: listeners, wire parsing, the authoritative algorithm and the answer table."""
