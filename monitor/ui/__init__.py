"""The live Textual screen. Only ``monitor.cli.run_live`` imports this package, so the headless
report never loads Textual."""
