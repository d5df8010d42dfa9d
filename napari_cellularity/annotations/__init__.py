"""Point annotations of cells (compute only, no Qt): in-memory form, CSV / GeoJSON I/O, autosave."""
