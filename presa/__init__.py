"""presa: the presa in carico of chronic patients."""

__version__ = "0.1.0"
