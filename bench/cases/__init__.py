"""The bench's cases, one module each; ``bench.run`` runs them in order."""
