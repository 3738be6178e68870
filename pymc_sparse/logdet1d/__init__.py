"""Certified O(1) log-determinants of one-parameter matrix families (Chebyshev tables)."""
