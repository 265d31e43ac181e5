"""The operator's terminal UI (Textual). Imported only by `shoal tui`: the core never needs it."""
