"""``python -m fitdiff.autoencoder CHECKPOINT OUT.safetensors``: export a trained generator's weights.

A separate entry module, so that running it does not re-execute :mod:`fitdiff.autoencoder.weights`,
which the package already imported.
"""

import sys

from fitdiff.autoencoder.weights import main

if __name__ == "__main__":
    sys.exit(main())
