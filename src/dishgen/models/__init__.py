"""Networks, one file per family (cgan.py, fastgan.py, cvae.py); blocks shared by two families in layers.py."""
