"""The `hybridpool` command: runs the platform, its infrastructure and its tools."""
