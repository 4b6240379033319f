"""Streaming WER per set and lookahead: evaluation sets, WER, reports and the comparison table."""
