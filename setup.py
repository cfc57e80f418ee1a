"""The one compiled part: recvmmsg/sendmmsg for the UDP listener (Linux).

Optional: where it does not build (no C compiler, not Linux), installation goes on and
the listener uses its pure-Python path (src/shadowdns/resolver/server.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("shadowdns.resolver._udpbatch",
                             ["src/shadowdns/resolver/_udpbatch.c"], optional=True)])
