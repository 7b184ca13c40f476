"""S3 test fixtures (defined in tests/S3/fixtures.py so tests/test_S3.py can share them)."""

from tests.S3.fixtures import (  # noqa: F401
                               HAND_CASES,
                               cryptolin,
                               fast_config,
                               hand_cases,
                               llm_server,
                               llm_settings,
                               news_server,
)
