"""Benchmarks that print a table (not run by CI), incl. the GPU self-check; run as python -m bench.<script>."""
