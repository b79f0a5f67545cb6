"""Experiments: thin scripts that compose dsmtheory and write figures/NAME.{png,json}."""
