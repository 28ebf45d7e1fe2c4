"""MaggotUBA tagging backend: windows of 5-point spines, the self-supervised
autoencoder, taggers built on its encoder, prediction.

Plugs into :mod:`taggingbackends` through an entry point. Importing this
package does not import torch; the model modules do.
"""

__version__ = "0.1.0"
