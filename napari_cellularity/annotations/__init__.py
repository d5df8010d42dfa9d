"""annotations subpackage."""
