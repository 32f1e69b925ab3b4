"""Maintenance scripts of the repository (documentation site, notebooks); not part of the package."""
