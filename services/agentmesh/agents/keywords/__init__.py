"""Keywords agent: RAKE key phrases and regular-expression entities."""
