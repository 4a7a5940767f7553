"""Deployment descriptions and the scripts that render and check them."""
