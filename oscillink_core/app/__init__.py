"""The application layer: embeddings, ingest, the index store and the command line.

Everything here uses the solver core only through its public API (``oscillink_core``'s
``__all__``); the core never imports this package.
"""
