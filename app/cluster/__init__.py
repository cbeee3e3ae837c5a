"""The cluster: the box's Ray nodes (head and workers), named by their llmbox resource, and the
agent on each that reports its memory and watches its engine processes."""
