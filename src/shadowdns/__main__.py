"""`python -m shadowdns` runs the `shadowdns` command."""

import sys

from shadowdns.cli import main

sys.exit(main())
