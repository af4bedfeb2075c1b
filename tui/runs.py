"""`ftc runs` in a terminal: a table of runs; Enter opens the monitor of the selected one."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from ftc.core.text import printable
from ftc.tui.app import CSS_PATH, MonitorScreen
from ftc.tui.memory import MemorySampler
from ftc.tui.state import read_state
from ftc.tui.summary import RUN_COLUMNS, find_runs, run_row


class RunsApp(App[None]):
    """The runs under a folder, newest state on every refresh (r); Enter opens one in the monitor."""

    CSS_PATH = CSS_PATH
    TITLE = "ftc runs"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("enter", "open", "monitor"), Binding("r", "reload", "refresh"), Binding("q", "quit", "quit")]

    def __init__(self, root: str | Path, *, sample_memory: bool = True) -> None:
        super().__init__()
        self.root = Path(root)
        self.sample_memory = sample_memory
        self.runs: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Static(Text(printable(f"runs under {self.root}/", line=True) + "  (enter: open in the monitor, "
                          "r: refresh, q: quit)"), id="runs-title")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*RUN_COLUMNS)
        self.action_reload()
        table.focus()

    def action_reload(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.runs = find_runs(self.root)
        for run_dir in self.runs:
            table.add_row(*run_row(self.root, run_dir, read_state(run_dir)), key=str(run_dir))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.open(Path(str(event.row_key.value)))

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if self.runs and 0 <= table.cursor_row < len(self.runs):
            self.open(self.runs[table.cursor_row])

    def open(self, run_dir: Path) -> None:
        sampler = MemorySampler(run_dir) if self.sample_memory else None
        self.push_screen(MonitorScreen(run_dir, sampler=sampler), lambda _: self.action_reload())
