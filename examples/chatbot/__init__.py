"""Auto-Train's reference chatbot: a small stylist that reads its rules from Auto-Train over HTTP.

Run it with `python -m examples.chatbot` (see README.md here). It depends only on `autotrain_client` (and,
to answer with Claude, on `anthropic`), never on the Auto-Train server's own packages.
"""
