"""Sprint 7."""
