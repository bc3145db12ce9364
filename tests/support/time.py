from datetime import UTC, datetime

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
