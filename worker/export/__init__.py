"""Exports of a checkpoint: ``merged`` (model files), ``gguf`` (llama.cpp), ``plan`` (what the
database says about it), ``run`` (the export process, ``python -m worker.export``)."""
