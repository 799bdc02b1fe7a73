"""openbloo: a self-hosted iMessage / SMS gateway that speaks Blooio's v2 REST API."""

__version__ = "0.1.0"
