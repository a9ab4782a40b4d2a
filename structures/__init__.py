"""Built-in connectivity generators, one per file; importing a file registers its structure."""
