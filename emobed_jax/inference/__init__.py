"""Using a trained run: prediction on new media, export and streaming (from the workdir alone)."""
