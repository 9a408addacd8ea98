"""The pipeline's use cases, one module each: intake, generation, run-all, review, deploys, reconcile,
reports. Each takes the ports it needs explicitly; `bot/runtime.py` builds them."""
