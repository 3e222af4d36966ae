"""``python -m serving.dev --model-dir DIR``: the development server."""

import sys

from serving.dev.cli import main

sys.exit(main())
