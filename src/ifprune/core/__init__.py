"""What every path needs: FFN discovery, plans, masked hooks, the compact model, model loading,
prompt encoding and the prompt pass, errors, atomic file writes, and the tiny test models.
Depends on nothing else in ifprune."""
