"""Evolution strategies over flat actor parameter vectors (ALGORITHM.md sections 3-5)."""
