"""Operations: summary line, pruning, vacuum, and what operators use to watch the daemon."""
