"""Process runtime: devices, threads, precision and kernel choices."""
