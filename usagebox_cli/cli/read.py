"""Reading commands."""
