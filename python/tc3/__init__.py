"""tc3: LF-Amazon-1.3M product titles to a fine-tuned description writer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tc3")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
