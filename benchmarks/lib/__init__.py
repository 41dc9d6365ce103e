"""Helpers of the benchmarks, in modules by idea; the unit tests reuse some (the echo scenes)."""
