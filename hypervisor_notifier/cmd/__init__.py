"""Console scripts: each parses its configuration and starts one thing."""
