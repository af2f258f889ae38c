"""System tests: the demo, the soak and their process supervision, across every room."""
