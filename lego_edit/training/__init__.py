"""Training entry points: one module per trained thing, each a config dataclass plus main(cfg)."""
