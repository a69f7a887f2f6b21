"""SynthPedes, the built-in procedurally generated dataset; its TFDS builder is in builder.py."""
