"""The operations room web page."""
