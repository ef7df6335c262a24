"""Output compensation: the pure least-squares refit of the kept down-projection columns (`refit`)
and its lifecycle (`calibration`: calibration text -> cached per-layer moments -> `Compensator`,
applied when a compact model loads a plan). Depends on core only."""
