"""usagebox: a local usage meter for AI products.

The package is importable on its own: every CLI command is a thin wrapper
around a function in ``usagebox_cli.ops`` or ``usagebox_cli.engines.sqlite`` that
returns plain data.
"""

__version__ = "0.1.0"
