"""HybridPool services: each sub-package is an app run with `python -m services.<name>`."""
