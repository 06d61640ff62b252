"""mapillaryd: SD card and drop folder → Mapillary, with nothing lost and nothing uploaded twice."""

__version__ = "0.1.0"
