"""Point-annotation datasets and loaders."""
