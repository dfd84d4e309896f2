"""Optional third-party visibility back-ends behind the built-in rasteriser's interface."""
