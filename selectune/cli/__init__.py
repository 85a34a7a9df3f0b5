"""The `selectune` command line (the top layer): main.py builds the app from one module per command group."""
