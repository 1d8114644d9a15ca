"""lmforge: the whole life of a language model, from one command line."""

__version__ = "0.1.0"
