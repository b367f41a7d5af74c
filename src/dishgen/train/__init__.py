"""Training scripts, one linear story per family: cgan.py, fastgan.py, cvae.py, lora.py."""
