"""Sphinx configuration of the hypervisor-notifier documentation (``tox -e docs``)."""

project = "hypervisor-notifier"
copyright = "hypervisor-notifier developers"

extensions = [
    # .. show-options:: renders the options of an oslo.config.opts namespace.
    "oslo_config.sphinxext",
    # The architecture picture, drawn by Graphviz's dot (Debian graphviz, bindep.txt).
    "sphinx.ext.graphviz",
]
graphviz_output_format = "svg"

root_doc = "index"
exclude_patterns: list[str] = []
html_theme = "alabaster"
html_static_path: list[str] = []
# Warnings are errors (sphinx-build -W): a broken reference fails the build.
nitpicky = True
