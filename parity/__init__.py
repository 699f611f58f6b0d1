"""Weight conversion between the Flax reference and the torch port, and the equivalence checks."""
