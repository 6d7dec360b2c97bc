"""Sentiment agent: lexicon-based polarity with negation and emphasis."""
