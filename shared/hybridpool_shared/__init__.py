"""HybridPool's shared library: messages, topic catalogue, settings, logging, metrics and domain maths."""
