"""The shared page builder writes plotly.min.js only where a page is written, and the
test session never writes into the checkout's data/ or reports/."""

from __future__ import annotations

from pathlib import Path

from S1.report_page import PLOTLY_FILE, html_page, write_page

REPO = Path(__file__).resolve().parents[2]


def test_building_a_page_writes_nothing(settings_env):
    page = html_page("t", "<p>x</p>", standalone=False)
    assert f"<script src='{PLOTLY_FILE}'" in page
    assert not settings_env.reports_dir.exists() or not any(settings_env.reports_dir.iterdir())


def test_write_page_puts_plotly_beside_the_page_only(settings_env, tmp_path):
    out = tmp_path / "somewhere" / "page.html"
    assert write_page(out, html_page("t", "<p>x</p>", standalone=False)) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["page.html", PLOTLY_FILE]
    assert not (settings_env.reports_dir / PLOTLY_FILE).exists()       # not in the reports folder
    alone = tmp_path / "alone" / "page.html"
    write_page(alone, html_page("t", "<p>x</p>", standalone=True))      # self-contained: no side file
    assert sorted(p.name for p in alone.parent.iterdir()) == ["page.html"]


def test_the_session_folders_are_outside_the_checkout():
    """Without ``settings_env`` a test still gets the session's temp folders, never the checkout's."""
    from S1.settings import get_settings

    get_settings.cache_clear()
    s = get_settings()
    for folder in (s.data_dir, s.reports_dir, s.local_state_dir):
        assert not Path(folder).resolve().is_relative_to(REPO), folder
    html_page("no settings_env", "<p>x</p>")                          # the original leak: nothing written
    assert not (REPO / "reports" / PLOTLY_FILE).exists()
