"""TCP limits: the values are checked on construction, and clients are grouped by network.

The behaviour of the limits on real connections is in tests/integration/test_tcp_limits.py.
"""

from __future__ import annotations

import pytest

from shadowdns.errors import ConfigError
from shadowdns.resolver.tcp import TCPLimits, client_prefix


@pytest.mark.parametrize(("first", "second", "same"), [
    ("192.0.2.1", "192.0.2.254", True),  # one /24
    ("192.0.2.1", "192.0.3.1", False),
    ("::ffff:192.0.2.1", "192.0.2.9", True),  # IPv4-mapped counts as its IPv4 /24
    ("2001:db8:0:ab00::1", "2001:db8:0:abff:ffff::1", True),  # one /56
    ("2001:db8:0:ab00::1", "2001:db8:0:ac00::1", False),
    ("fe80::1%lo", "fe80::2", True),  # a scope does not make its own network
    ("2001:db8::", "32.1.13.184", False),  # same leading bytes, different families
])
def test_clients_are_grouped_by_slash_24_and_slash_56(first: str, second: str,
                                                      same: bool) -> None:
    assert (client_prefix(first) == client_prefix(second)) is same


def test_defaults_are_valid_and_bounded() -> None:
    limits = TCPLimits()
    assert limits.max_connections > limits.per_prefix > 0
    assert limits.lifetime > limits.idle_timeout > limits.message_timeout > 0


def test_every_bad_limit_is_named_by_its_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        TCPLimits(max_connections=0, idle_timeout=float("inf"), message_timeout=-1,
                  lifetime=-1, per_prefix=-1)
    assert [p.file for p in caught.value.problems] == [
        "--tcp-max-connections", "--tcp-idle-timeout", "--tcp-message-timeout",
        "--tcp-lifetime", "--tcp-per-prefix"]


def test_zero_switches_lifetime_and_per_prefix_off() -> None:
    limits = TCPLimits(lifetime=0, per_prefix=0)
    assert (limits.lifetime, limits.per_prefix) == (0, 0)
