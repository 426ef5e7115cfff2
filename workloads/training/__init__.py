"""The pieces of the training job: settings, Tune/RLlib config, reporting and the end-of-run commit.

``workloads.train_job`` is the entrypoint that ties them together. Only ``settings`` is cheap to
import (pydantic, PyYAML); the other modules load Ray, RLlib or matplotlib when they are used.
"""
