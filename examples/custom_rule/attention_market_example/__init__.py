"""Example plug-in rules for attention-market (see docs/extending.md, which writes them step by step)."""
