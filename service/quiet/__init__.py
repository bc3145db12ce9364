"""Noise control: silences, maintenance windows, inhibition, open thresholds, flapping and
heartbeats decide whether an incident pages (see gate.py)."""
