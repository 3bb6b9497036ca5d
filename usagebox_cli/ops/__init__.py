"""Operations: plain functions behind each command, returning plain data."""
