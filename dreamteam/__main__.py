"""`python -m dreamteam COMMAND ...`: the `dreamteam` command line (dreamteam/tools/cli.py) from a checkout."""

import sys

from dreamteam.tools.cli import main

sys.exit(main())
