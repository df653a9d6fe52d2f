"""The ``ddformat`` command line and what it draws and prints (reports, previews, plots)."""

from .main import main

__all__ = ["main"]
