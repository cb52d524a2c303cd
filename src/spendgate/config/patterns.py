"""The patterns config names and periods must match (shared by the schema's modules)."""

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$"
PERIOD_PATTERN = r"^(hourly|daily|weekly|monthly|lifetime|rolling:[1-9][0-9]*[mhd])$"
