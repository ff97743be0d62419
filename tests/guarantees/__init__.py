"""The guarantees of README's Guarantees section, each proven by a suite here."""
