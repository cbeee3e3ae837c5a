"""The serving plane: the Ray head, the router app and one Serve app per model."""
