"""Data: find the dataset, decode it once, split it, and feed it to Keras."""
