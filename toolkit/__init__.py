"""tk: provision, launch and check a small-team AI inference stack."""

__version__ = "0.1.0"
