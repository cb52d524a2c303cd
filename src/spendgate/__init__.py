"""spendgate: a self-hosted LLM gateway that caps AI token spend before the expensive call."""

__version__ = "0.1.0"
