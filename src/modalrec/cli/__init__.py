"""The `modalrec` command line: one sub-command per module in this package."""
