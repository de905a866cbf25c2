"""The package version (read by hatch at build time: ``[tool.hatch.version]``)."""

__version__ = "0.1.0"
