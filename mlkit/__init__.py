"""mlkit: multimodal skin-condition classification, from public data to deployment."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
