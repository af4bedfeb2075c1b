"""SVG snapshots of the monitor on the fixture runs (pytest-textual-snapshot). After a deliberate change of
the layout: `pytest tests/test_tui_snapshots.py --snapshot-update`, then look at the SVGs before committing."""

from __future__ import annotations

from tui_fixtures import RUNS, T0

from ftc.tui.app import make_app


def clock() -> float:
    return T0 + 270.0  # a fixed "now" for the elapsed time of runs still running


def test_healthy_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(RUNS / "healthy", sample_memory=False), terminal_size=(80, 24))


def test_healthy_200x50(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(RUNS / "healthy", sample_memory=False), terminal_size=(200, 50))


def test_healthy_log_scale_120x36(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(RUNS / "healthy", sample_memory=False), press=["l"], terminal_size=(120, 36))


def test_troubled_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(RUNS / "troubled", sample_memory=False, clock=clock), terminal_size=(80, 24))


def test_troubled_stop_dialog_100x30(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = make_app(RUNS / "troubled", sample_memory=False, clock=clock)
    assert snap_compare(app, press=["q"], terminal_size=(100, 30))


def test_crashed_200x50(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(RUNS / "crashed", sample_memory=False), terminal_size=(200, 50))
