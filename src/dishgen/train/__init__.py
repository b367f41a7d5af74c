"""Training scripts, one linear story per family: cgan.py, cvae.py, lora.py."""
