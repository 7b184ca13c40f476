"""Sprint 5."""
