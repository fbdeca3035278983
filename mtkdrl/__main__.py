"""`python -m mtkdrl ...` is the `mtkdrl` command."""

import sys

from .cli import main

sys.exit(main())
