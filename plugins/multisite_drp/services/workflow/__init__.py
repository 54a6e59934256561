"""The workflow port (base) and its adapters: embedded (run-qbb) and PanDA (BPS)."""
