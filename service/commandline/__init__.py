"""Commands for people, beside ``service/cli.py``: ``incidentd incidents ...`` (a client of
the incident API) and the exit codes every command shares."""
