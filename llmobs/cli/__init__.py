"""The `llmobs` command line.

Command modules import the rest of llmobs inside the command functions, not at module top:
`llmobs --help` loads only these modules, never the servers' libraries (see ``main.py``).
"""
