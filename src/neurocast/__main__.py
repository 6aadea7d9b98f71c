"""`python -m neurocast` is the same as the `neurocast` command."""

import sys

from neurocast.cli import main

sys.exit(main())
