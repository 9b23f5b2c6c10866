"""``python -m acestep_viz ...`` is the ``acestep-viz`` command (for environments without the script on PATH)."""
import sys

from acestep_viz.cli import main

sys.exit(main())
