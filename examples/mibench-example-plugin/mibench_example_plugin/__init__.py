"""Example mibench plugin. Kept import-light: mibench imports it only to find the card folders."""
