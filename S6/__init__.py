"""Sprint 6."""
