"""``python -m serving.dev --model-dir DIR``: the development server."""

import sys

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

from serving.dev.cli import main

sys.exit(main())
