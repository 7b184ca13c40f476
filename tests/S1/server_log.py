"""Checks on the local servers' own request log (arrival times as the server saw them),
so that rate-limit tests assert event order and counts rather than wall-clock margins."""

from __future__ import annotations


def assert_retry_after_honoured(requests, *, retry_after: float, in_flight: int, api: str = "/") -> None:
    """The first 429 in ``requests`` (server records with ``status``, ``t`` = answered and
    ``arrived``) opened a ``retry_after`` window on the server's clock. A request that
    the client sent after reading the 429 arrives after that window; inside it only
    requests already in flight may arrive -- at most ``in_flight - 1`` (the client's
    concurrency besides the 429'd request). The download must have gone on afterwards."""
    ban = next(r for r in requests if r.status == 429)
    rest = [r for r in requests if r is not ban and api in r.path and r.arrived >= ban.t]
    # 5% of the window is left for the float clocks (the client's and the server's are the same clock)
    inside = [r for r in rest if r.arrived < ban.t + 0.95 * retry_after]
    after = [r for r in rest if r.arrived >= ban.t + 0.95 * retry_after]
    assert len(inside) <= in_flight - 1, (
        f"{len(inside)} request(s) arrived inside the Retry-After window; at most {in_flight - 1} "
        "could have been in flight when the 429 was answered")
    assert after, "nothing was requested after the Retry-After window"
