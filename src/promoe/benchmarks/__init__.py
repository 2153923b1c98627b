"""Performance measurements of PRo-MoE (run them with `promoe bench`, or one by one: `python -m promoe.benchmarks.<name>`)."""
