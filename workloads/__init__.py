"""Code that runs inside Ray clusters: environments, the training job and the serving application.

Importing this package is cheap: Ray, torch and gymnasium load only in the modules that need them.
"""
