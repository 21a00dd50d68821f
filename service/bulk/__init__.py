"""The bulk path: a model version in this process, scoring files and data frames without a server."""
