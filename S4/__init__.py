"""Sprint 4."""
