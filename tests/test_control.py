"""RUN_DIR/control/: requests are atomic files, taken once."""

import pytest

from ftc.core import control


def test_request_then_take_once(tmp_path):
    control.request(tmp_path, "checkpoint")
    control.request(tmp_path, "checkpoint")  # asking twice before the step ends is one request
    assert control.take(tmp_path) == {"checkpoint"}
    assert control.take(tmp_path) == set()


def test_take_without_folder_and_ignores_strangers(tmp_path):
    assert control.take(tmp_path) == set()
    control.request(tmp_path, "stop")
    (tmp_path / "control" / "notes.txt").write_text("x")
    assert control.take(tmp_path) == {"stop"}
    assert (tmp_path / "control" / "notes.txt").exists()


def test_unknown_action(tmp_path):
    with pytest.raises(ValueError, match="unknown control action 'pause'"):
        control.request(tmp_path, "pause")
