"""Load tests: each starts its own embedded broker and Redis and prints its figures."""
