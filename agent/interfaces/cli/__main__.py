"""``python -m rsrag.agent.interfaces.cli`` runs the ``rsrag`` command line."""

import sys

from rsrag.agent.interfaces.cli import main

sys.exit(main())
