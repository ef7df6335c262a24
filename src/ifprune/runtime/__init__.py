"""Running a pruned model: `generate` (select -> load plan -> decode, the data path's last step)
and the static-cache fast decoder the benchmarks time."""
