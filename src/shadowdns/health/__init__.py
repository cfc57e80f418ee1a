"""Health probes, the rise/fall state machine and failover events."""
