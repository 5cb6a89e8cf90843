"""`python -m gateway ...`: the `gateway` command (`gateway/cli/`)."""

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
