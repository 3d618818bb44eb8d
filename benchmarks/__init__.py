"""xraycnn's benchmarks: `python -m benchmarks` (`make bench`) measures the core figures side by side, each part
in a process of its own (benchmarks/parts); benchmarks/studies holds the one-question studies; results/ the JSON
behind every figure the README and docs quote."""
