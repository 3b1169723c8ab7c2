"""``python -m rsrag.agent.cli`` runs the ``rsrag`` command line."""

import sys

from rsrag.agent.cli import main

sys.exit(main())
