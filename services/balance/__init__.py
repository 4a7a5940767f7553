"""Computes each site's gas-versus-electric balance price per interval."""
