"""`python -m examples.chatbot`: start the reference chatbot (settings: see `--help`)."""

import sys

from .app import main

sys.exit(main())
