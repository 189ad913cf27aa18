"""Benchmarks behind `mixtral-export bench`: speed, memory, and the streaming-export memory check."""
