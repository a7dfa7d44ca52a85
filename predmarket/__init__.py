"""predmarket: a real-time binary prediction-market backend."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("predmarket")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
