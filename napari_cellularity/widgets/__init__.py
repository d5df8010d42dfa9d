"""widgets subpackage."""
