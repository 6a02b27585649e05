"""The catalogue: what a shop's table and photos say, read through its description, and the subset and split."""
