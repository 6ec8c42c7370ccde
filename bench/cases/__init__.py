"""The issue's six cases, one module each; ``bench.run`` runs them in order."""
