"""WHIP and WHEP clients on aiortc and av, for the CLI, the tests and the benchmarks."""
