"""Generator families: one loader per family behind the common generation interface."""
