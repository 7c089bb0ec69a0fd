"""MLflow I/O: key names, run lifecycle, the logger, readers."""
