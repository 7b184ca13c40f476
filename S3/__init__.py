"""Sprint 3."""
