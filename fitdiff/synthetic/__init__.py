"""The embedded synthetic fitted dataset: procedural subjects with known shape and reflectance."""
