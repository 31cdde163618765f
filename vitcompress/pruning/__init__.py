"""ViT pruning's parts (study section 3.3): slim blocks and selection (slim), gates and importance (gates).
The workflow steps are :mod:`vitcompress.methods.prune_gates` and :mod:`vitcompress.methods.prune`."""
