"""Sprint 2."""
