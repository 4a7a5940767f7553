"""Site registry with consent and audit."""
