"""Memory agent: facts remembered in named spaces, recalled by BM25, owned by their principal."""
