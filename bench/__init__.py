"""Benchmarks: each module has a ``main()`` that runs it and writes JSON + Markdown into ``bench/results``."""
