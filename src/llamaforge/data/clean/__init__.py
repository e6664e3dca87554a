"""`llamaforge data clean`: the streaming cleaning pipeline (one module per step)."""
