"""Assistant agent: a general assistant backed by the configured language model."""
