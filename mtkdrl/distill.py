"""`python -m mtkdrl.distill RECIPE [key=value ...]` (also under `accelerate launch -m`).

The loop lives in `mtkdrl.distiller`; this module is only the entry point, so that running it
with `-m` does not find it already imported by the package.
"""

import sys

from .distiller import main

if __name__ == "__main__":
    sys.exit(main())
