"""Where work runs: the backend protocol and its Parsl and simulated implementations."""
