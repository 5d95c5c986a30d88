"""Sphinx configuration of the release notes (``tox -e releasenotes``), written with reno."""

project = "hypervisor-notifier release notes"
copyright = "hypervisor-notifier developers"

# .. release-notes:: renders releasenotes/notes/*.yaml from the git history.
extensions = ["reno.sphinxext"]

root_doc = "index"
exclude_patterns: list[str] = []
html_theme = "alabaster"
html_static_path: list[str] = []
nitpicky = True
