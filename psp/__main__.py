"""``python -m psp`` runs the ``partysip`` command."""

import sys

from psp.cli import main

sys.exit(main())
