"""Summarizer agent: extractive TextRank summaries."""
