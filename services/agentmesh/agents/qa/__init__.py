"""QA agent: extractive question answering with BM25 sentence ranking."""
