"""Joint training of the sparsity predictor and the LLM (IFPruning stages 1 and 2): recipes, data,
the loop, warm start and reports. The artifact it writes is selection.artifact's format."""
