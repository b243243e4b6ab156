"""How a process runs: Paddle's import-time setup, ranks and collectives, how a failure ends the process, the
errors a user can act on, and atomic file writes. Imports nothing else of utils/."""
