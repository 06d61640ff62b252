"""Readers and writers of media formats.

:mod:`daemon.media.jpeg` is pure byte surgery on JPEG files (no third-party code);
:mod:`daemon.media.exif` reads the metadata a camera wrote and writes the Mapillary description
into EXIF, using piexif only to encode.
"""
