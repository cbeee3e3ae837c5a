"""GPU facts through NVML (nvidia-ml-py), with a plain answer on hosts without a GPU."""
