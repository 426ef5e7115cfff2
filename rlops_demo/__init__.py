"""The one-machine main job: train, serve and roll out automatically on a local Ray cluster."""
