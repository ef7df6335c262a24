"""Joint training of the sparsity predictor and the LLM (IFPruning stages 1 and 2), its data and artifact."""
