"""The parts of the policy server (``workloads/serve_app.py``): loading, validation, capture, metrics.

Importing this package is cheap; each module loads Ray, torch or FastAPI only when it needs them.
"""
