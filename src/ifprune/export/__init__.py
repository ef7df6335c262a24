"""Writing a compact model as a standard checkpoint that runtimes open without ifprune."""
