"""S3 test fixtures (defined in tests/S3/fixtures.py so tests/test_S3.py can share them)."""

from tests.S3.fixtures import (HAND_CASES, cryptolin, fast_config, hand_cases, llm_server,  # noqa: F401
                               llm_settings, news_server)
