"""Evaluation by decoding: translation metrics over a split."""
