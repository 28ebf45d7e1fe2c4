"""taggingbackends: behaviour tagging of Drosophila larva tracking data.

The framework package: the tracking data model, one reader/writer module per
file format, `.label` I/O and the ``tagging-backend`` command line. Importing it
never imports torch; backends such as :mod:`maggotuba` do that themselves.
"""

__version__ = "0.1.0"
