"""HTTP guards every server of the box shares: which Host names it answers, and bounded requests."""
