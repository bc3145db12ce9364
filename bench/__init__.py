"""End-to-end benchmark of incidentd on the bundled broker: ``python -m bench.run``."""
