"""Data: raw records, image cleaning, de-duplication, cropping, captioning, splitting."""
