"""Use cases: each takes the data-access objects as arguments and knows nothing of requests."""
