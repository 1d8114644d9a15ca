"""One module per CLI command; each command is a typed function whose docstring is its --help."""
